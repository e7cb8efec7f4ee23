"""`fedpatch predict`: verdicts with a run's model, the same scores as the run, and
bad input refused with a clear message and nothing half-written."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedpatch_app.cli import main

CAT = "pipe_clip"


@pytest.fixture(scope="module")
def run_dir(pipe_clip_run: Path) -> Path:
    return pipe_clip_run


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _predict(model: str, category: str, out: Path, *rest: str) -> int:
    """``fedpatch predict --model MODEL --category CATEGORY --out OUT REST...``'s exit code."""
    return main(["predict", "--model", model, "--category", category, "--out", str(out), *rest])


@pytest.mark.slow
def test_predict_gives_the_runs_scores_and_a_verdict_for_every_image(
    run_dir: Path, tiny_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    test_dir = tiny_root / CAT / "test"
    model = str(run_dir / "model")
    args = ("--device", "cpu", "--write-maps", "--overlays", str(test_dir))
    assert _predict(model, CAT, out, *args) == 0
    rows = _rows(out / "predictions.csv")
    images = sorted(test_dir.rglob("*.png"))
    assert sorted(r["path"] for r in rows) == sorted(map(str, images))
    run_scores = {
        r["rel_path"]: float(r["score"]) for r in _rows(run_dir / "scores" / f"{CAT}.csv")
    }
    manifest = json.loads((run_dir / "model" / "model.json").read_text())
    threshold = manifest["categories"][CAT]["thresholds"]["image"]["raw"]
    for row in rows:
        rel = str(Path(row["path"]).relative_to(tiny_root / CAT))
        assert float(row["score"]) == pytest.approx(run_scores[rel], rel=1e-6, abs=1e-9)
        assert float(row["normalized_score"]) == pytest.approx(float(row["score"]) / threshold)
        assert row["verdict"] == ("NOK" if float(row["score"]) > threshold else "OK")
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len(rows) and all("regions" in r for r in records)
    for record in records:
        assert (out / record["overlay"]).is_file()
        for region in record["regions"]:
            x0, y0, x1, y1 = region["bbox"]
            assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 400 and region["area"] > 0
    maps = sorted((out / "maps").glob("*.png"))
    assert len(maps) == len(rows)
    with Image.open(maps[0]) as img:
        assert img.mode in ("I;16", "I") and img.size == (400, 400)


@pytest.mark.slow
def test_bad_input_fails_clearly_and_writes_nothing(
    run_dir: Path, tiny_root: Path, tmp_path: Path, capsys
) -> None:
    model = str(run_dir / "model")
    images = tmp_path / "images"
    shutil.copytree(tiny_root / CAT / "test" / "good", images)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "o1"
    assert _predict(model, CAT, out, str(images)) == 2
    assert "broken.png" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    (images / "broken.png").unlink()
    assert _predict(model, "tank_screw", out, str(images)) == 2
    assert "no category 'tank_screw'" in capsys.readouterr().err
    assert _predict(str(tmp_path / "none"), CAT, out, str(images)) == 2
    assert "not a fedpatch model folder" in capsys.readouterr().err
    tampered = tmp_path / "tampered"
    shutil.copytree(run_dir / "model", tampered)
    bank = tampered / "banks" / f"{CAT}.npz"
    data = bytearray(bank.read_bytes())
    data[-100] ^= 0xFF
    bank.write_bytes(bytes(data))
    assert _predict(str(tampered), CAT, out, str(images)) == 2
    assert "has changed since the model was written" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_an_image_of_another_size_is_resized_to_the_native_size_with_a_note(
    run_dir: Path, tiny_root: Path, tmp_path: Path
) -> None:
    from fedpatch_app.inspection.model_folder import load_model
    from fedpatch_app.inspection.predictor import Predictor

    image = tmp_path / "small.png"
    with Image.open(next((tiny_root / CAT / "test" / "good").glob("*.png"))) as img:
        img.resize((200, 160)).save(image)
    result = Predictor(load_model(run_dir / "model"), device="cpu").score(CAT, [image])[0]
    # Scored at the native size whatever the upload's size: the map is bounded by the model.
    assert result.size == (200, 160) and result.anomaly_map.shape == (400, 400)
    assert "200x160" in result.note and "400x400" in result.note
    assert np.isfinite(result.score)


@pytest.mark.slow
def test_overlays_are_written_only_when_asked_for(
    run_dir: Path, tiny_root: Path, tmp_path: Path
) -> None:
    image = next((tiny_root / CAT / "test" / "good").glob("*.png"))
    out = tmp_path / "plain"
    assert _predict(str(run_dir / "model"), CAT, out, "--device", "cpu", str(image)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "predictions.jsonl"]
    record = json.loads((out / "predictions.jsonl").read_text())
    assert "overlay" not in record and record["verdict"] in ("OK", "NOK")


@pytest.mark.slow
def test_an_image_outside_the_size_rule_is_refused_before_any_work(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (4000, 1)).save(images / "line.png")
    out = tmp_path / "out"
    code = _predict(str(run_dir / "model"), CAT, out, str(images))
    assert code == 2
    err = capsys.readouterr().err
    assert "line.png" in err and "4000x1" in err and "aspect-ratio limit" in err
    assert not out.exists() or not any(out.iterdir())


def test_an_image_of_another_size_scores_as_the_same_image_resized_first(
    tmp_path: Path,
) -> None:
    """The documented rule: an image of another size (within the size rule) is resized to
    the category's native size by the loader, then scored. So its score and map equal
    those of the image resized to the native size beforehand, and the map has the native
    (height, width) whatever the image's size."""
    from fedpatch_app.data.images import read_image, resize_rgb
    from fedpatch_app.inspection.model_folder import CategoryModel, load_model, write_model
    from fedpatch_app.inspection.predictor import Predictor
    from fedpatch_app.metrics.map_scaling import MapScaling
    from fedpatch_app.model.embedding import FeatureSpec
    from fedpatch_app.model.patchcore import Bank

    native = (96, 64)  # (width, height): not square, so a transposed map shows
    spec = FeatureSpec(backbone="efficientnet_lite0", weights="none", image_size=32, embed_dim=8)
    rows = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    cats = {CAT: CategoryModel(Bank(rows, spec, CAT, 1.0, 100), native, MapScaling(0.0, 9.0))}
    write_model(tmp_path / "model", spec, cats, {"run_name": "r", "run_kind": "centralized"})
    predictor = Predictor(load_model(tmp_path / "model", allow_incomplete=True), device="cpu")

    rng = np.random.default_rng(1)
    images, first = [], []
    for width, height in [(120, 60), (150, 100), (48, 40)]:
        ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
        pixels = ramp + rng.integers(0, 55, size=(height, width, 3))
        path = tmp_path / f"part-{width}x{height}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        resized = tmp_path / f"resized-{width}x{height}.png"
        Image.fromarray(resize_rgb(read_image(path), native)).save(resized)
        images.append(path)
        first.append(resized)
    # One image per call, as the service scores them (a batch must share one size).
    results = [predictor.score(CAT, [path])[0] for path in images + first]
    for other, same in zip(results[:3], results[3:], strict=True):
        assert other.size != native and same.size == native
        assert other.anomaly_map.shape == same.anomaly_map.shape == (64, 96)
        assert "resized to the native size" in other.note and not same.note
        assert other.score == same.score
        np.testing.assert_array_equal(other.anomaly_map, same.anomaly_map)
    assert len({r.score for r in results[:3]}) == 3, "the images must score differently"
