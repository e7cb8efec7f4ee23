"""Heatmap overlays for the report: the most and least anomalous test images of a category.

Each panel shows the test image, its anomaly map on one colour scale for the whole category
(the scale of the exported 16-bit maps) and the ground-truth regions outlined. They need the
images (the data root, given or recorded in the run) and the run's exported maps; when either
is missing the report says why instead of drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpatch_app.errors import FedpatchError
from fedpatch_app.reports.plots import new_figure, save
from fedpatch_app.reports.runs import Run
from fedpatch_app.results import run_facts
from fedpatch_app.results.schema import Scores, load_scores

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from fedpatch_app.data.autovi import Category
    from fedpatch_app.metrics.map_scaling import MapScaling

#: How many most / least anomalous images the heatmaps show per category.
HEATMAP_COUNT = 3
#: Colour of the ground-truth contours.
REGION_COLOUR = "#00FF66"


def data_root_of(run: Run, data_root: str | Path | None) -> Path | None:
    """The images' root: the one given, else the run's recorded data root if it exists here."""
    if data_root is not None:
        return Path(data_root)
    recorded = run.data.root
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return None


def maps_root_of(run: Run) -> Path | None:
    """The run's exported maps: ``<run>/maps``, else the folder its results record."""
    own = run.folder / "maps"
    if own.is_dir():
        return own
    recorded = run_facts.maps_folder(run.results)
    if recorded:
        path = Path(recorded)
        path = path if path.is_absolute() else run.folder / path
        if path.is_dir():
            return path
    return None


def pick_extremes(scores: np.ndarray, count: int) -> tuple[list[int], list[int]]:
    """Indices of the ``count`` highest and (other) lowest scores, highest / lowest first."""
    order = np.argsort(-scores, kind="stable")
    most = [int(i) for i in order[:count]]
    least = [int(i) for i in order[::-1] if int(i) not in most][:count]
    return most, least


@dataclass
class _Inputs:
    """What every panel of one category's figure reads."""

    scores: Scores
    category: Category
    scaling: MapScaling
    data_root: Path
    maps_root: Path

    def __post_init__(self) -> None:
        self.by_rel = {s.rel_path: s for s in self.category.test}


def _panel(ax: Axes, inputs: _Inputs, rel: str, title: str) -> Any:
    """Draw one image with its map and regions; return the map's artist (for the colour bar)."""
    from fedpatch_app.data.autovi import read_image
    from fedpatch_app.results.official_maps import read_map_png

    sample = inputs.by_rel.get(rel)
    if sample is None:
        name = inputs.category.name
        raise FedpatchError(
            f"{rel} of scores/{name}.csv is not a test image under {inputs.data_root}"
        )
    image = read_image(sample.path)
    raw = inputs.scaling.from_uint16(read_map_png(inputs.maps_root / inputs.category.name / rel))
    regions = [] if sample.is_good else inputs.category.load_regions(sample)
    h, w = image.shape[:2]
    low, high = inputs.scaling.low, inputs.scaling.high
    ax.imshow(image)
    artist = ax.imshow(
        raw,
        cmap="inferno",
        alpha=0.5,
        vmin=low,
        vmax=high if high > low else low + 1,
        extent=(-0.5, w - 0.5, h - 0.5, -0.5),
        interpolation="bilinear",
    )
    for region in regions:
        mask = np.asarray(region.mask, dtype=np.float32)
        if mask.shape == (h, w) and mask.any():
            ax.contour(mask, levels=[0.5], colors=REGION_COLOUR, linewidths=1.4)
    # The image score in the colour bar's units (the map's maximum).
    ax.set_title(f"{title}\n{rel.removeprefix('test/')}  score {raw.max():.4g}", fontsize=9)
    return artist


def plot_heatmaps(
    run: Run, category_name: str, data_root: Path, maps_root: Path, path: Path
) -> str | None:
    """Draw the overlays; return None on success, else the reason they were skipped."""
    from fedpatch_app.data.layouts import load_category
    from fedpatch_app.results.official_maps import read_scaling

    try:
        scores = load_scores(run.folder, category_name)
        category = load_category(data_root, category_name)
        scaling, _ = read_scaling(maps_root, category_name)
    except FedpatchError as exc:
        return str(exc)
    if len(scores) == 0:
        return f"no image scores for {category_name}"
    inputs = _Inputs(scores, category, scaling, data_root, maps_root)
    most, least = pick_extremes(scores.scores, HEATMAP_COUNT)
    width, height = category.size
    panel_w = 4.2
    cols = max(len(most), len(least))
    fig = new_figure(
        panel_w * cols + 1.0, (panel_w * height / width + 0.55) * 2 + 0.5, constrained=True
    )
    axes = fig.subplots(2, cols, squeeze=False)
    artist = None
    for row, (picks, row_title) in enumerate(
        ((most, "most anomalous"), (least, "least anomalous"))
    ):
        for col in range(cols):
            axes[row, col].set_axis_off()
            if col >= len(picks):
                continue
            try:
                rel = scores.rel_paths[picks[col]]
                artist = _panel(axes[row, col], inputs, rel, f"{row_title} #{col + 1}")
            except FedpatchError as exc:
                return str(exc)
    if artist is not None:
        bar = fig.colorbar(artist, ax=axes.ravel().tolist(), shrink=0.8)
        bar.set_label("anomaly score (one scale for the whole category)")
    fig.suptitle(f"{run.label}: {category_name} (green contour = ground-truth region)", fontsize=11)
    save(fig, path)
    return None


def slug(text: str) -> str:
    """``text`` as a file-name part (letters, digits, ``-`` and ``_``)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def heatmaps_section(runs: Sequence[Run], plots: Path, data_root: str | Path | None) -> list[str]:
    """The report's heatmap section: the figures, or per run and category why there are none."""
    lines = [
        "## Heatmaps",
        "",
        f"The {HEATMAP_COUNT} most and {HEATMAP_COUNT} least anomalous test images per "
        "category: image, anomaly map on one colour scale per category, ground-truth "
        "regions outlined in green.",
        "",
    ]
    for run in runs:
        root = data_root_of(run, data_root)
        maps_root = maps_root_of(run)
        if root is None or maps_root is None:
            missing = (
                "no dataset root: pass --data-root"
                if root is None
                else "no exported maps in the run folder"
            )
            lines += [f"- {run.label}: heatmaps skipped ({missing}).", ""]
            continue
        for cat in sorted(run.categories):
            path = plots / f"heatmaps_{run.index + 1}_{slug(cat)}.png"
            if not (maps_root / cat / "test").is_dir():
                lines += [f"- {run.label}, {cat}: heatmaps skipped (no maps in {maps_root}).", ""]
                continue
            reason = plot_heatmaps(run, cat, root, maps_root, path)
            if reason:
                lines += [f"- {run.label}, {cat}: heatmaps skipped ({reason}).", ""]
            else:
                lines += [f"### {run.label}: {cat}", "", f"![heatmaps](plots/{path.name})", ""]
    return lines
