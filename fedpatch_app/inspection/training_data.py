"""What a model was trained on, for model.json, `/v1/model`, the review page and reports.

Recorded under `provenance.training_data` of model.json (the service's `/v1/model` returns
the manifest as it is):

    {"synthetic": bool, "dataset": "AutoVI" | "built-in synthetic data (...)" | "<folder> (...)",
     "generator": {kind, scale, seed} | null,
     "categories": {"<cat>": {"layout": "autovi" | "mvtec" | "folder" | null,
                              "train_images": n, "calibration_images": n,
                              "test_good": n, "test_defective": n}}}

`layout` is null where the server of a federation did not see the data. Synthetic data
are never called AutoVI, whatever layout the generator wrote them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: The counts a category's entry records (those a run knows).
COUNT_KEYS = ("train_images", "calibration_images", "test_good", "test_defective")


def synthetic_of(data_root: str | Path | None) -> dict[str, Any] | None:
    """The generator's facts (kind, scale, seed) when `data_root` holds synthetic data."""
    from fedpatch_app.data.synthetic import is_synthetic

    if data_root is None or not Path(data_root).is_dir():
        return None
    info = is_synthetic(data_root)
    if info is None:
        return None
    return {k: info.get(k) for k in ("kind", "scale", "seed")}


def dataset_name(
    data_root: str | Path | None, synthetic: Mapping[str, Any] | None, layouts: Iterable[str]
) -> str:
    """A name for the data a person can read: AutoVI only for a downloaded AutoVI copy."""
    from fedpatch_app.data.download import CHECKSUMS_FILE

    if synthetic is not None:
        return (
            f"built-in synthetic data ({synthetic.get('kind')}, scale {synthetic.get('scale')}, "
            f"seed {synthetic.get('seed')})"
        )
    kinds = sorted({k for k in layouts if k})
    root = Path(data_root) if data_root else None
    if root is not None and kinds == ["autovi"] and (root / CHECKSUMS_FILE).is_file():
        return "AutoVI"
    if not kinds:
        return f"{root.name} (layout not recorded)" if root else "the clients' own data"
    where = root.name if root is not None else "the clients' data"
    return f"{where} ({', '.join(kinds)} layout)"


def training_data_facts(
    data_root: str | Path | None,
    layouts: Mapping[str, str | None],
    counts: Mapping[str, Mapping[str, Any]],
    synthetic: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `training_data` entry of a model's provenance (see the module doc); `counts`
    holds per category a results block's counts (train, calibration, test_good, ...)."""
    if synthetic is None:
        synthetic = synthetic_of(data_root)
    cats = sorted(set(layouts) | set(counts))
    entries = {}
    for cat in cats:
        found = dict(counts.get(cat) or {})
        values = {
            "train_images": found.get("train"),
            "calibration_images": found.get("calibration"),
            "test_good": found.get("test_good"),
            "test_defective": found.get("test_defective"),
        }
        entries[cat] = {
            "layout": layouts.get(cat),
            **{k: v for k, v in values.items() if v is not None},
        }
    return {
        "synthetic": synthetic is not None,
        "dataset": dataset_name(data_root, synthetic, [v for v in layouts.values() if v]),
        "generator": dict(synthetic) if synthetic is not None else None,
        "categories": entries,
    }


def local_layouts(data_root: str | Path, names: Iterable[str], layout: str) -> dict[str, str]:
    """The layout each category is read with at `data_root` (as the run read it)."""
    from fedpatch_app.data.layouts import resolve_layout

    return {name: resolve_layout(data_root, name, layout) for name in names}
