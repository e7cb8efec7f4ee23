"""benchmarks/scale.py's own arithmetic: the fraction views it measures on, the growth
exponent it fits and the table it prints (the runs themselves are `fedpatch centralized`
and `fedpatch run`, tested elsewhere; a whole benchmark takes hours)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fedpatch_app.data.synthetic import generate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale_benchmark", REPO / "benchmarks/scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fraction_view_keeps_a_share_of_train_and_every_test_image(scale, tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate(root, scale="tiny", seed=0, categories=["pipe_clip"], kind="drawn")
    train = sorted((root / "pipe_clip" / "train" / "good").iterdir())
    kept = scale.fraction_view(root, tmp_path / "view", 0.5, ["pipe_clip"])
    view = tmp_path / "view" / "pipe_clip"
    assert kept == len(list((view / "train" / "good").iterdir())) == -(-len(train) // 2)
    assert [p.name for p in sorted((view / "train" / "good").iterdir())] == [
        p.name for p in train[:kept]
    ]
    tests = sorted(p.name for p in (root / "pipe_clip" / "test").rglob("*.png"))
    assert sorted(p.name for p in (view / "test").rglob("*.png")) == tests
    assert (tmp_path / "view" / "synthetic.json").is_file()


def test_growth_exponent_recovers_a_power_law(scale) -> None:
    x = [100.0, 250.0, 500.0, 1000.0]
    assert scale.exponent(x, [3.0 * v**1.5 for v in x]) == pytest.approx(1.5)
    assert scale.exponent(x, [7.0 for _ in x]) == pytest.approx(0.0, abs=1e-12)
    assert scale.exponent([100.0], [1.0]) is None  # one point fits nothing


def test_report_prints_the_ratios_against_the_targets(scale, capsys) -> None:
    mib = 2**20
    row = {
        "train": 100,
        "central_seconds": 100.0,
        "fed_seconds": 120.0,
        "central_peak": 900 * mib,
        "server_peak": 860 * mib,
        "client_peak": 700 * mib,
        "bytes_up": 50e6,
        "bytes_up_train": 20e6,
        "bytes_down": 60e6,
        "largest_bank": 20 * mib,
        "banks": 10e6,
        "central_phases": {"fit": 80.0},
        "fed_phases": {"train": 90.0},
    }
    scale.report([row, {**row, "train": 200, "fed_seconds": 240.0}], 2.0, idle=800 * mib)
    out = capsys.readouterr().out
    first = [line for line in out.splitlines() if line.startswith("| 100 |")][0]
    cells = [c.strip() for c in first.strip("|").split("|")]
    assert cells[3] == "1.20"  # federated / centralized wall time
    assert cells[6] == "3.0"  # (860 - 800) MiB above idle over a 20 MiB bank
    assert cells[-1] == "1.00"  # 20 MB of coresets over 2 x 10 MB of banks
    assert "growth exponent of fed_seconds with the training images: 1.00" in out


def test_phases_are_read_from_each_runs_results(scale, capsys) -> None:
    central = {"run": {"seconds": {"a/fit": 10.0, "b/fit": 5.0, "a/predict": 2.0, "total": 17.0}}}
    fed = {"run": {"seconds": {"prepare_data": 3.0, "phase_train": 40.0, "total": 50.0}}}
    assert scale.central_phases(central) == {"fit": 15.0, "predict": 2.0}
    assert scale.fed_phases(fed) == {"prepare_data": 3.0, "train": 40.0}
    row = {"train": 100, "central_phases": {"fit": 15.0}, "fed_phases": {"train": 40.0}}
    scale.phase_report([row])
    out = capsys.readouterr().out
    assert "| 100 | centralized | fit 15 |" in out
    assert "| 100 | federated | train 40 |" in out
