"""The run folders a report shows: loading them, labelling them, and what may stand together.

Two runs are comparable only when their patch features are the same: a different backbone,
weights or image size changes every figure, so a gap between such runs says nothing about the
federation. The feature-spec fingerprint recorded in each run decides it. Runs with different
fingerprints are refused unless the caller allows mixing; then every run's label carries its
features tag (``[features A]``), so that each table and plot that shows them side by side says
which features each column used.

A category with few test images gives figures that one image can move a long way; such
categories are found here once (:func:`few_images`) and noted wherever their figures appear.

A run folder's status.json is read too (through ``run_status.effective_status``): a run that
failed or was interrupted is shown as such, and a folder without results.json whose run
did not finish is refused with what the run finished and kept.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.errors import ConfigError, DataError
from fedpatch_app.results import run_facts
from fedpatch_app.results.schema import CURVES_FILE, load_curves, load_results, results_path
from fedpatch_app.run_status import describe, effective_status

#: A category's figures get a "few test images" note below this many good or defective images.
MIN_TEST_IMAGES = 10
#: Marks a category with few test images in every table.
FEW_MARK = "†"


@dataclass
class Run:
    """One run folder as the report sees it."""

    index: int
    folder: Path
    results: dict[str, Any]
    label: str = ""
    features_tag: str | None = None
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    curves_note: str | None = None
    #: status.json of a run that did not complete (failed, interrupted), else None.
    stopped: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return str(self.results["run"]["kind"])

    @property
    def name(self) -> str:
        return str(self.results["run"]["name"])

    @property
    def categories(self) -> dict[str, dict[str, Any]]:
        return self.results["categories"]

    @property
    def features(self) -> run_facts.FeatureFacts:
        return run_facts.features(self.results)

    @property
    def data(self) -> run_facts.DataFacts:
        return run_facts.data(self.results)

    @property
    def number(self) -> str:
        """How the report names the run in running text: ``run 2 (central (centralized))``."""
        return f"run {self.index + 1} ({self.label})"


def load_runs(run_dirs: Sequence[str | Path], *, allow_mixed: bool = False) -> list[Run]:
    """Read every run's results and curves; label the runs (unique, with the features tag
    when they differ); ConfigError when their features differ and ``allow_mixed`` is off."""
    if not run_dirs:
        raise DataError("the report needs at least one run folder")
    runs: list[Run] = []
    for index, item in enumerate(run_dirs):
        path = results_path(item)
        status = effective_status(path.parent)
        stopped = status if status and status.get("status") in ("failed", "interrupted") else None
        if stopped is not None and not path.is_file():
            raise DataError(
                f"{path.parent}: no results to report, the run did not finish: {describe(stopped)}"
            )
        run = Run(index=index, folder=path.parent, results=load_results(path), stopped=stopped)
        _load_curves(run)
        runs.append(run)
    tags = features_tags(runs)
    if len({t for t in tags.values()}) > 1:
        check_features(runs, allow_mixed)
        for run in runs:
            run.features_tag = tags[run.index]
    _label(runs)
    return runs


def _load_curves(run: Run) -> None:
    """The run's curves, or a note of why there are none."""
    if not (run.folder / CURVES_FILE).is_file():
        run.curves_note = f"no {CURVES_FILE} in {run.folder}"
        return
    try:
        run.curves = load_curves(run.folder)
    except DataError as exc:
        run.curves_note = str(exc)


def _label(runs: Sequence[Run]) -> None:
    """Unique labels ``name (kind)``, ``#2`` on repeats, the features tag when mixed."""
    seen: dict[str, int] = {}
    for run in runs:
        base = f"{run.name} ({run.kind})"
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base} #{seen[base]}"
        run.label = f"{label} [features {run.features_tag}]" if run.features_tag else label


def features_tags(runs: Sequence[Run]) -> dict[int, str]:
    """A letter per distinct fingerprint in order of appearance (``A``, ``B``, ...); ``?``
    for runs that recorded none. Keyed by run index."""
    letters: dict[str, str] = {}
    out: dict[int, str] = {}
    for run in runs:
        fingerprint = run.features.fingerprint
        if fingerprint is None:
            out[run.index] = "?"
            continue
        if fingerprint not in letters:
            n = len(letters)
            letters[fingerprint] = string.ascii_uppercase[n] if n < 26 else str(n + 1)
        out[run.index] = letters[fingerprint]
    return out


def describe_features(run: Run) -> str:
    """``fingerprint 71d784d8d4ecbd52: wide_resnet50_2, weights none (random), 64 px``."""
    f = run.features
    parts = [f.backbone, f"weights {f.weights}" + (" (random)" if f.random_weights else "")]
    if f.image_size is not None:
        parts.append(f"{f.image_size} px")
    return f"fingerprint {f.fingerprint or 'not recorded'}: {', '.join(parts)}"


def check_features(runs: Sequence[Run], allow_mixed: bool) -> None:
    """ConfigError naming every run's features unless they share one fingerprint (runs
    without a recorded fingerprint cannot be checked; they are tagged ``?``, not refused)."""
    known = {r.features.fingerprint for r in runs if r.features.fingerprint is not None}
    if len(known) <= 1 or allow_mixed:
        return
    listing = "; ".join(f"{r.folder} ({describe_features(r)})" for r in runs)
    raise ConfigError(
        "these runs computed different patch features, so their figures differ by the "
        f"features as well as by the training: {listing}. Put them in one report only on "
        "purpose, with --allow-mixed (allow_mixed=True): every table then marks each run's "
        "features."
    )


def baseline(runs: Sequence[Run]) -> Run:
    """The run others are compared with: the centralized one if any, else the first."""
    for run in runs:
        if run.kind == "centralized":
            return run
    return runs[0]


def few_images(block: dict[str, Any]) -> tuple[int, int] | None:
    """``(good, defective)`` test-image counts of a category block when either is below
    :data:`MIN_TEST_IMAGES`, else None."""
    counts = block.get("counts") or {}
    good = int(counts.get("test_good", 0))
    defective = int(counts.get("test_defective", 0))
    if good < MIN_TEST_IMAGES or defective < MIN_TEST_IMAGES:
        return good, defective
    return None


def few_images_note(entries: Sequence[tuple[str, tuple[int, int]]]) -> list[str]:
    """The note under a table whose rows ``entries`` (name, (good, defective)) are marked."""
    if not entries:
        return []
    listed = ", ".join(f"{name} ({good} good, {bad} defective)" for name, (good, bad) in entries)
    return [
        f"{FEW_MARK} Few test images: {listed}. Below {MIN_TEST_IMAGES} good or "
        f"{MIN_TEST_IMAGES} defective test images a figure means little: one image can move "
        "the image AUROC by up to 1/n (n the smaller count), and the AUC-sPRO rests on the "
        "regions of a few defective images: read differences there as noise, not as a "
        "difference between methods.",
        "",
    ]
