"""Small helpers shared by the experiment's tables."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """A metric for a table: 4 decimals, "-" when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def mean_of(results: dict, key: str) -> Any:
    """A run's mean over categories of one metric ("auroc" or an FPR limit key)."""
    mean = results["mean"]
    return mean["image_auroc"] if key == "auroc" else mean["auc_spro"][key]
