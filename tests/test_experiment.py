"""`fedpatch experiment`: preset validation, and one small preset run end to end
(centralized, a federated `flwr run` simulation, local-only, summary and report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedpatch_app.cli import main
from fedpatch_app.data.synthetic import generate
from fedpatch_app.errors import ConfigError
from fedpatch_app.experiment import load_preset

PRESET = """
settings:
  weights: none
  device: cpu
  image_size: 64
runs:
  - kind: centralized
    name: centralized
  - kind: federated
    name: federated-noniid
    partition: category
  - kind: local-only
    name: local-only
    partition: category
ablation:
  partition: category
  local_oversample: [2.0]
"""


def test_stage1_preset_is_valid() -> None:
    preset = load_preset("stage1")
    kinds = [(r.kind, r.partition) for r in preset.runs]
    assert kinds == [
        ("centralized", None),
        ("federated", "iid"),
        ("federated", "category"),
        ("local-only", "category"),
    ]
    assert preset.ablation_oversample == (1.0, 2.0, 4.0)
    assert preset.settings.num_clients == 5
    privacy = load_preset("privacy")
    assert privacy.sweep is not None and privacy.sweep.key == "dp_epsilon"
    assert privacy.budget_study is not None and privacy.budget_study.smallest_fraction == 0.25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runs: 3", "runs"),
        ("runs:\n  - kind: magic", "kind"),
        ("runs:\n  - kind: federated", "partition"),
        ("settings:\n  colour: red\nruns: []", "colour"),
        ("runs:\n  - kind: centralized\n  - kind: centralized", "two runs"),
    ],
)
def test_bad_presets_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_preset(str(path))
    with pytest.raises(ConfigError, match="not found"):
        load_preset("no-such-preset")


def test_cli_passes_the_engine(tmp_path: Path, monkeypatch, capsys) -> None:
    import fedpatch_app.experiment.runner as experiment

    calls = []

    def fake(preset, data_root, out, **kwargs):
        calls.append(kwargs)
        summary = tmp_path / "experiment.md"
        summary.write_text("# summary")
        return summary

    monkeypatch.setattr(experiment, "run_experiment", fake)
    base = ["experiment", "--preset", "stage1", "--data-root", "d", "--out", "o"]
    assert main(base) == 0
    assert main([*base, "--engine", "inprocess"]) == 0
    assert [c["engine"] for c in calls] == ["simulation", "inprocess"]
    with pytest.raises(SystemExit):
        main([*base, "--engine", "ray"])
    assert "# summary" in capsys.readouterr().out


@pytest.mark.slow
def test_small_experiment_end_to_end(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    generate(data, scale="tiny", seed=0, categories=["pipe_clip", "pipe_staple"], kind="drawn")
    preset = tmp_path / "mini.yaml"
    preset.write_text(PRESET)
    out = tmp_path / "exp"
    code = main(
        ["experiment", "--preset", str(preset), "--data-root", str(data), "--out", str(out)]
    )
    assert code == 0
    text = (out / "experiment.md").read_text()
    assert "| category | centralized | federated-noniid | local-only |" in text
    assert "Ablation: local oversampling" in text
    for name, kind in (
        ("centralized", "centralized"),
        ("federated-noniid", "federated"),
        ("local-only", "local-only"),
    ):
        results = json.loads((out / name / "results.json").read_text())
        assert results["run"]["kind"] == kind
        assert sorted(results["categories"]) == ["pipe_clip", "pipe_staple"]
    fed = json.loads((out / "federated-noniid" / "results.json").read_text())["federated"]
    assert len(fed["clients"]) == 5 and fed["dropped"] == []
    # The federated bank has the centralized size: coreset-ratio x all patches of the category.
    central = json.loads((out / "centralized" / "results.json").read_text())
    for cat in ("pipe_clip", "pipe_staple"):
        assert fed["banks"][cat]["size"] == central["categories"][cat]["bank"]["size"]
    assert (out / "report" / "report.md").is_file()
    assert "summary:" in capsys.readouterr().out
