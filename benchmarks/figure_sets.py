"""The registry of `benchmarks/figures.py`: every figure set the docs quote.

A figure set is the documented command(s) that produce some figures, how to read the
values from what they leave in the set's work folder, and how to render the set's tables.
To add figures: register a `FigureSet` below or in `figure_sets_security.py` (or give an
existing set a new table or a new value in its reader), then mark the figures in the docs
(see figures.py); `--list` shows the new set and `--run` measures it.

Commands are run by bash in the repository root, exactly as the docs give them, except
that outputs go to the set's work folder (`{work}`) instead of `runs/...`; data folders
are the documented ones (`data/...`), shared between sets.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import figure_tables as t

Values = dict[str, float]


@dataclass(frozen=True)
class Command:
    """One documented command. Skipped when `creates` exists (a path relative to the
    repository root, `{work}` substituted); None: always run (the command resumes
    itself). `clears` is removed before a rerun: a half-written output folder that the
    command would refuse."""

    text: str
    creates: str | None = None
    clears: str | None = None


@dataclass(frozen=True)
class FigureSet:
    """Figures measured together.

    `read(work)` gives the values from the work folder; a derived set has no commands and
    computes its values from the sets it `needs` with `derive`. `tables` render the
    Markdown tables its block markers name. `minutes`: run time on 2 CPU cores and where
    that estimate comes from (`estimate`). `timing`: glob patterns of the keys that are
    times or speed ratios (compared loosely, never failing a check). `archived`: why the
    docs keep figures that today's code does not reproduce (their differences are
    reported, do not fail a check, and `--write` leaves them unless the set is named).
    """

    name: str
    about: str
    commands: tuple[Command, ...] = ()
    read: Callable[[Path], Values] | None = None
    needs: tuple[str, ...] = ()
    derive: Callable[[Mapping[str, Values]], Values] | None = None
    tables: Mapping[str, t.Table] = field(default_factory=dict)
    minutes: float = 0.0
    estimate: str = "estimate"
    timing: tuple[str, ...] = ()
    archived: str = ""
    keep: tuple[str, ...] = ()  # work-folder globs of small raw outputs to commit


SETS: dict[str, FigureSet] = {}


def register(figure_set: FigureSet) -> FigureSet:
    if figure_set.name in SETS:
        raise ValueError(f"figure set {figure_set.name!r} registered twice")
    SETS[figure_set.name] = figure_set
    return figure_set


def command_log(work: Path, index: int) -> Path:
    """Where the output (stdout and stderr) of a set's command number `index` (from 1) goes."""
    return work / f"command-{index}.log"


def command_seconds(work: Path) -> dict[str, float]:
    """Wall time of each command of a set that ran (by number, from 1)."""
    path = work / "seconds.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ---------------------------------------------------------------------- stage 1

PHOTO_DATA = Command(
    "fedpatch synth --out data/photo-small --kind photo --scale small",
    creates="data/photo-small/synthetic.json",
)


def _experiment(data: str, options: str) -> Command:
    """`fedpatch experiment --preset stage1` as the docs give it, into the work folder."""
    return Command(
        f"fedpatch experiment --preset stage1 --data-root {data} --out {{work}}/stage1 {options}",
        creates="{work}/stage1/experiment.md",
        clears="{work}/stage1",
    )


def _read_stage1(work: Path) -> Values:
    return t.read_experiment(work / "stage1")


PRETRAINED = "--backbone efficientnet_lite0 --weights imagenet --engine inprocess"

register(
    FigureSet(
        "stage1-photo-pretrained",
        "centralized vs federated IID / non-IID vs local-only and the oversampling ablation, "
        "pretrained EfficientNet-Lite0 on photo data (technical report 4, slide deck, README)",
        (PHOTO_DATA, _experiment("data/photo-small", PRETRAINED)),
        read=_read_stage1,
        timing=("*/seconds",),
        tables={
            "means": t.means_table(),
            "gaps": t.gaps_table,
            "fairness": t.fairness_table,
            **t.experiment_tables(),
        },
        minutes=8,
        estimate="technical report 7",
    )
)
for _seed in (1, 2):
    register(
        FigureSet(
            f"stage1-photo-pretrained-seed{_seed}",
            f"the pretrained stage-1 study with --seed {_seed} (technical report, appendix A)",
            (PHOTO_DATA, _experiment("data/photo-small", f"{PRETRAINED} --seed {_seed}")),
            read=_read_stage1,
            timing=("*/seconds",),
            minutes=8,
            estimate="as stage1-photo-pretrained",
        )
    )


def _three_seeds(values: Mapping[str, Values]) -> Values:
    runs = [values[name] for name in SETS["stage1-photo-seeds"].needs]
    out: Values = {}
    for metric in ("auc_spro_0.3", "image_auroc"):
        central = [r[f"centralized/mean/{metric}"] for r in runs]
        iid = [r[f"federated-iid/mean/{metric}"] for r in runs]
        out[f"centralized/mean3/{metric}"] = statistics.fmean(central)
        out[f"federated-iid/mean3/{metric}"] = statistics.fmean(iid)
        out[f"iid_gap/mean3/{metric}"] = statistics.fmean(iid) - statistics.fmean(central)
        out[f"iid_gap/worst/{metric}"] = min(i - c for i, c in zip(iid, central, strict=True))
    return out


register(
    FigureSet(
        "stage1-photo-seeds",
        "seeds 0, 1, 2 of the pretrained study together: means and the IID gap",
        needs=(
            "stage1-photo-pretrained",
            "stage1-photo-pretrained-seed1",
            "stage1-photo-pretrained-seed2",
        ),
        derive=_three_seeds,
    )
)


def _read_iid_gap(work: Path) -> Values:
    """The appendix A runs, the banks' covering of the training patches, and the bytes
    the 4x IID run sends against the default IID run."""
    values = t.read_experiment(work / "experiment")
    radii = json.loads((work / "radii.json").read_text(encoding="utf-8"))
    for cat, runs in radii.items():
        for run, figures in runs.items():
            values[f"{run}/{cat}/train_radius"] = figures["radius"]
            values[f"{run}/{cat}/good_p99"] = figures["good_p99"]
    four, two = "federated-iid-oversample-4/bytes_up_mb", "federated-iid/bytes_up_mb"
    values["federated-iid-oversample-4/bytes_vs_iid"] = values[four] / values[two]
    return values


register(
    FigureSet(
        "stage1-iid-gap",
        "technical report appendix A: the banks' covering radius over the training patches, "
        "the good test patches' 99th percentile, and federated IID with local-oversample 4",
        (
            PHOTO_DATA,
            Command(
                "fedpatch experiment --preset benchmarks/presets/iid-gap.yaml --data-root "
                "data/photo-small --out {work}/experiment --backbone efficientnet_lite0 "
                "--weights imagenet --engine inprocess",
                creates="{work}/experiment/experiment.md",
                clears="{work}/experiment",
            ),
            Command(
                "python benchmarks/iid_gap.py --experiment {work}/experiment --data-root "
                "data/photo-small --out {work}/radii.json",
                creates="{work}/radii.json",
            ),
        ),
        read=_read_iid_gap,
        timing=("*/seconds",),
        minutes=8,
        estimate="estimate: four runs of the stage-1 study and the feature extraction",
    )
)
register(
    FigureSet(
        "stage1-photo-random",
        "the stage-1 study with random WideResNet-50-2 weights on the photo data "
        "(technical report, appendix B.1)",
        (
            PHOTO_DATA,
            _experiment(
                "data/photo-small", "--backbone wide_resnet50_2 --weights none --engine inprocess"
            ),
        ),
        read=_read_stage1,
        timing=("*/seconds",),
        tables={"means": t.means_table(t.STAGE1_RUNS, "run (random weights)")},
        minutes=30,
        estimate="measured on an idle machine, local-only and the ablation included",
    )
)

DRAWN_DATA = Command(
    "fedpatch synth --out data/synthetic-small --scale small --kind drawn",
    creates="data/synthetic-small/synthetic.json",
)
register(
    FigureSet(
        "stage1-drawn-random",
        "technical report appendix B.2: random WideResNet-50-2 weights, drawn scenes, 256 px",
        (DRAWN_DATA, _experiment("data/synthetic-small", "--weights none")),
        read=_read_stage1,
        timing=("*/seconds",),
        tables={
            "means": t.means_table(),
            "pairs": t.pair_table,
            "ablation-reference": t.ablation_table(" (default)", reference=True),
            **t.experiment_tables(),
        },
        minutes=31,
        estimate="measured on an idle machine: 31 minutes",
    )
)
register(
    FigureSet(
        "stage1-drawn-random-128",
        "technical report appendix B.2: the same study at image size 128",
        (
            DRAWN_DATA,
            _experiment("data/synthetic-small", "--weights none --image-size 128"),
        ),
        read=_read_stage1,
        timing=("*/seconds",),
        tables=t.experiment_tables(),
        minutes=11,
        estimate="an earlier measurement on an idle machine",
    )
)

AUTOVI_SCALE_DATA = Command(
    "fedpatch synth --out data/autovi-scale --kind photo --scale autovi --workers 2",
    creates="data/autovi-scale/synthetic.json",
)


# ---------------------------------------------------------------------- speed (README)


def _printed(index: int) -> Callable[[Path], Values]:
    def read(work: Path) -> Values:
        return t.read_printed(command_log(work, index).read_text(encoding="utf-8"))

    return read


def _speed(name: str, about: str, text: str, minutes: float, estimate: str) -> None:
    register(
        FigureSet(
            name,
            about,
            (Command(text, creates="{work}/command-1.log"),),
            read=_printed(1),
            minutes=minutes,
            estimate=estimate,
            timing=("*",),
        )
    )


_speed(
    "speed-coreset-patches",
    "README: coreset selection against the reference sampler, patch features, k = 1 %",
    "python benchmarks/coreset.py --data patches --ratios 0.01",
    13,
    "performance.md: 9.5 min of feature extraction and the timed selections",
)
_speed(
    "speed-coreset-gaussian",
    "README: the same on Gaussian noise",
    "python benchmarks/coreset.py --data gaussian --ratios 0.01",
    8,
    "performance.md: the timed selections",
)
for _search in ("exact", "auto"):
    _speed(
        f"speed-predict-wrn-{_search}",
        f"README and performance.md: fedpatch predict against the bare forward, WideResNet-50-2, "
        f"search = {_search}",
        f"python benchmarks/predict.py --backbone wide_resnet50_2 --images 16 --search {_search}",
        3,
        "performance.md's line speed",
    )
    _speed(
        f"speed-predict-effnet-{_search}",
        f"README and performance.md: the same with EfficientNet-Lite0, search = {_search}",
        "python benchmarks/predict.py --backbone efficientnet_lite0 --weights imagenet "
        f"--images 16 --search {_search}",
        2,
        "performance.md's line speed",
    )
_speed(
    "speed-serve",
    "README: the inspection service against the library call",
    "python benchmarks/serve.py",
    5,
    "estimate",
)


def _read_scale(work: Path) -> Values:
    return t.read_scale_table(command_log(work, 2).read_text(encoding="utf-8"))


register(
    FigureSet(
        "speed-scale",
        "README and performance.md: the whole six-category run at AutoVI's counts, "
        "federated against centralized, at 10 % and 100 % of the training images",
        (
            AUTOVI_SCALE_DATA,
            Command(
                "python benchmarks/scale.py --data-root data/autovi-scale --fractions 0.1 1.0",
                creates="{work}/command-2.log",
            ),
        ),
        read=_read_scale,
        minutes=50,
        estimate="two categories at four fractions took 29 min; data generation not counted",
        timing=("fed_vs_central_time", "server_above_idle_vs_bank", "server_growth_vs_bank"),
    )
)


def _read_main_job(work: Path) -> Values:
    return {"wall_s": command_seconds(work)["1"]}


register(
    FigureSet(
        "main-job",
        "README: the main job's wall time on 2 CPU cores, data generation included",
        (
            Command(
                'fedpatch run --run-config "out-dir={work}/runs run-name=main"',
                creates="{work}/runs/main/results.json",
            ),
        ),
        read=_read_main_job,
        minutes=1,
        estimate="README",
        timing=("*",),
    )
)

# The security sets (poisoning, honest runs) register themselves on import.
import figure_sets_security  # noqa: E402, F401
