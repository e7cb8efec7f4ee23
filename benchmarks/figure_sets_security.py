"""The security figure sets of `benchmarks/figures.py` (docs/security.md): dishonest
clients against the real server and clients (`benchmarks/poisoning.py`), and what the
defences cost honest runs (`benchmarks/honest_grid.py`). Registered when `figure_sets` is
imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import figure_tables as t
from figure_sets import AUTOVI_SCALE_DATA, Command, FigureSet, Values, register

POISONING_DATA = (
    Command(
        "python -m fedpatch_app.cli synth --out data/small --scale small --kind photo "
        "--categories pipe_staple pipe_clip",
        creates="data/small/synthetic.json",
    ),
    Command(
        "python -m fedpatch_app.cli synth --out data/own --scale small --kind photo --seed 1 "
        "--categories pipe_staple pipe_clip",
        creates="data/own/synthetic.json",
    ),
)
#: security.md 3.1 (pretrained) and 3.2 (random features: drawn scenes, poisoning.py's
#: defaults of 64 px and weights none, its own data in the work folder).
POISONING_FEATURES = {
    "pretrained": "--data data/small --own-defects data/own --weights imagenet "
    "--set backbone=efficientnet_lite0 --image-size 128",
    "random": "--kind drawn --work {work}/work",
}
POISON_ONLY = "--attacks poison --defences on"
EXCLUDE = "--defences on --set source-check-action=exclude"
#: Variant name -> poisoning.py options, per feature kind. Only "" and "blind" run every
#: attack with and without defences; the others run the honest and poisoned runs with the
#: defaults, all security.md quotes of them (3.1's table of places and seeds, 3.4).
POISONING_VARIANTS = {
    "pretrained": {
        "": "",
        "blind": "--server-blind",
        **{f"attacker{n}": f"--attacker {n} {POISON_ONLY}" for n in (1, 2, 3, 4)},
        **{f"seed{s}": f"--set seed={s} {POISON_ONLY}" for s in (1, 2, 3)},
        "shift2": f"--shift 2 {POISON_ONLY}",
        "category-attacker4": f"--partition category --attacker 4 {POISON_ONLY}",
        **{
            f"dirichlet-seed{s}": f"--partition dirichlet --set seed={s} {POISON_ONLY}"
            for s in (0, 1, 2)
        },
        "exclude": f"--attacks poison {EXCLUDE}",
        **{
            f"attacker{n}-exclude": f"--attacker {n} --attacks poison {EXCLUDE}"
            for n in (1, 2, 3, 4)
        },
        **{f"seed{s}-exclude": f"--set seed={s} --attacks poison {EXCLUDE}" for s in (1, 2, 3)},
        "blind-exclude": f"--server-blind --attacks inflate {EXCLUDE}",
        "shift2-exclude": f"--shift 2 --attacks poison {EXCLUDE}",
        "category-attacker4-exclude": f"--partition category --attacker 4 --attacks poison "
        f"{EXCLUDE}",
        **{
            f"dirichlet-seed{s}-exclude": f"--partition dirichlet --set seed={s} --attacks poison {EXCLUDE}"
            for s in (0, 1, 2)
        },
    },
    "random": {
        "": "",
        "blind": "--server-blind",
        **{f"seed{s}": f"--set seed={s} {POISON_ONLY}" for s in (1, 2)},
        "shift2": f"--shift 2 {POISON_ONLY}",
        "dirichlet": f"--partition dirichlet {POISON_ONLY}",
        "exclude": f"--attacks poison {EXCLUDE}",
        "blind-exclude": f"--server-blind --attacks inflate {EXCLUDE}",
        **{f"seed{s}-exclude": f"--set seed={s} --attacks poison {EXCLUDE}" for s in (1, 2)},
        "shift2-exclude": f"--shift 2 --attacks poison {EXCLUDE}",
        "dirichlet-exclude": f"--partition dirichlet --attacks poison {EXCLUDE}",
    },
}
#: Minutes per federated run of poisoning.py (estimate: two small categories, five clients).
POISONING_RUN_MINUTES = {"pretrained": 0.5, "random": 0.3}


def _read_poisoning(work: Path) -> Values:
    return t.read_poisoning(work / "poisoning.json")


def _poisoning_runs(options: str) -> int:
    """Federated runs a poisoning.py invocation makes (the honest run always comes first)."""
    words = options.split()
    attacks = words[words.index("--attacks") + 1].split(",") if "--attacks" in words else 6
    defences = 1 if "--defences" in words else 2
    return (1 + (attacks if isinstance(attacks, int) else len(attacks))) * defences


for _kind, _variants in POISONING_VARIANTS.items():
    for _variant, _options in _variants.items():
        _name = f"poisoning-{_kind}" + (f"-{_variant}" if _variant else "")
        _text = f"OMP_NUM_THREADS=1 python benchmarks/poisoning.py {POISONING_FEATURES[_kind]}"
        _text += f" {_options}" if _options else ""
        register(
            FigureSet(
                _name,
                f"security.md: dishonest clients, {_kind} features"
                + (f", {_variant}" if _variant else ", every attack with and without defences"),
                (
                    *(POISONING_DATA if _kind == "pretrained" else ()),
                    Command(f"{_text} --json {{work}}/poisoning.json", "{work}/poisoning.json"),
                ),
                read=_read_poisoning,
                minutes=_poisoning_runs(_options) * POISONING_RUN_MINUTES[_kind],
                estimate=f"estimate: {_poisoning_runs(_options)} federated runs of about "
                f"{POISONING_RUN_MINUTES[_kind]:g} min",
                timing=("*/seconds",),
                keep=("poisoning.json",),
            )
        )

_AUTOVI_POISONING = (
    "OMP_NUM_THREADS=2 python benchmarks/poisoning.py --data data/autovi-scale --categories "
    "pipe_clip --weights imagenet --set backbone=efficientnet_lite0 --image-size 256 "
    "--attacks none --defences on"
)


def _read_on_off(work: Path) -> Values:
    values = {f"on/{k}": v for k, v in t.read_poisoning(work / "on.json").items()}
    values.update({f"off/{k}": v for k, v in t.read_poisoning(work / "off.json").items()})
    return values


register(
    FigureSet(
        "poisoning-autovi-source-check",
        "security.md 3.3: an honest run at AutoVI's size, the source check on and off",
        (
            AUTOVI_SCALE_DATA,
            Command(f"{_AUTOVI_POISONING} --json {{work}}/on.json", "{work}/on.json"),
            Command(
                f"{_AUTOVI_POISONING} --set source-check=false --json {{work}}/off.json",
                "{work}/off.json",
            ),
        ),
        read=_read_on_off,
        minutes=3,
        estimate="security.md 3.3: a run takes about a minute; data generation not counted",
        timing=("*/seconds",),
        keep=("on.json", "off.json"),
    )
)
register(
    FigureSet(
        "honest-grid",
        "security.md 3.3: what the merge defences cost honest runs, over a grid of settings",
        (Command("python benchmarks/honest_grid.py --out {work}"),),
        read=t.read_honest_grid,
        minutes=90,
        estimate="about 2.5 min for a first cell, less once the features are cached",
        timing=("*/seconds",),
        keep=("cells/*.json",),
    )
)

#: The honest runs the source check flagged falsely, whose flagged line `exclude` cuts
#: (security.md 3.4): (flag set, exclude set, category).
FALSE_FLAG_RUNS = (
    (
        "poisoning-pretrained-dirichlet-seed2",
        "poisoning-pretrained-dirichlet-seed2-exclude",
        "pipe_staple",
    ),
    ("poisoning-pretrained-shift2", "poisoning-pretrained-shift2-exclude", "pipe_staple"),
    ("poisoning-random-dirichlet", "poisoning-random-dirichlet-exclude", "pipe_clip"),
)


def _exclude_cost(values: Mapping[str, Values]) -> Values:
    losses = [
        values[cut][f"honest-on/{cat}/auc"] - values[flag][f"honest-on/{cat}/auc"]
        for flag, cut, cat in FALSE_FLAG_RUNS
    ]
    return {"worst_honest_change": min(losses)}


register(
    FigureSet(
        "poisoning-exclude-cost",
        "security.md 4: the most an honest run falsely flagged lost under exclude",
        needs=tuple(name for run in FALSE_FLAG_RUNS for name in run[:2]),
        derive=_exclude_cost,
    )
)
