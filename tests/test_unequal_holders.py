"""An honest federation with unequal holders keeps every line's data (the real ServerApp
and ClientApp through the in-process grid, pretrained EfficientNet-Lite0 features at
256 px on photo data): one line holds 32 good images of tank_screw, the other 4, each in
its own folder. The larger line's rows that the small line never saw are its honest tail;
the robust merge must keep them (a size-blind rule with a 1 % tail, measuring support in
the supporter's own row spacing, left 69 of the large line's 7,981 rows out here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedpatch_app.federated.inprocess import run_inprocess

pytestmark = pytest.mark.slow

CAT = "tank_screw"


def _line(source: Path, dest: Path, train: list[Path], test: list[Path]) -> Path:
    """A line's own folder in the AutoVI layout with the given images (and their masks)."""
    cat = dest / CAT
    (cat / "train" / "good").mkdir(parents=True)
    shutil.copy(source / CAT / "defects_config.json", cat / "defects_config.json")
    for path in train:
        shutil.copy(path, cat / "train" / "good" / path.name)
    for path in test:
        rel = path.relative_to(source / CAT / "test")
        (cat / "test" / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, cat / "test" / rel)
        masks = source / CAT / "ground_truth" / rel.parent.name / path.stem
        if masks.is_dir():
            shutil.copytree(masks, cat / "ground_truth" / rel.parent.name / path.stem)
    shutil.copy(source / "synthetic.json", dest / "synthetic.json")
    return dest


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from fedpatch_app.data.synthetic import generate

    base = tmp_path_factory.mktemp("unequal")
    source = base / "all"
    generate(source, scale="small", seed=0, categories=[CAT], kind="photo")
    train = sorted((source / CAT / "train" / "good").glob("*.png"))
    test = sorted((source / CAT / "test").rglob("*.png"))
    large = _line(source, base / "large", train[:32], test[::2])
    small = _line(source, base / "small", train[32:36], test[1::2])
    return large, small


def test_an_honest_line_with_8x_the_images_keeps_every_row(
    lines: tuple[Path, Path], tmp_path: Path
) -> None:
    large, small = lines
    config = {
        "dataset": "autovi",
        "data-root": str(large),
        "categories": CAT,
        "num-clients": 2,
        "min-clients": 2,
        "backbone": "efficientnet_lite0",
        "weights": "imagenet",
        "image-size": 256,
        "device": "cpu",
        "out-dir": str(tmp_path),
        "run-name": "unequal",
        "wait-timeout": 0,
    }
    nodes = [{"data-root": str(large)}, {"data-root": str(small)}]
    results = run_inprocess(config, node_configs=nodes).results
    support = results["federated"]["banks"][CAT]["support"]
    assert support["checked"], support
    verdicts = sorted(support["clients"].values(), key=lambda v: -v["rows"])
    big, little = verdicts
    assert big["rows"] > 5 * little["rows"] and big["size_ratio"] > 5
    # Every row of both lines enters the merge: nothing of an honest line is left out.
    assert [v["quarantined"] for v in verdicts] == [0, 0], verdicts
    assert all(v["action"] in ("kept", "kept-tail") for v in verdicts), verdicts
    assert not [f for f in results["federated"].get("flagged", []) if "merge" in f["flag"]]
