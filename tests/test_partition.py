"""Client partitions: completeness, disjointness, determinism, schemes, JSON, CLI, errors."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from fedpatch_app.cli import main
from fedpatch_app.data.autovi import CATEGORIES, load_category
from fedpatch_app.data.partition import (
    CONF_DIR,
    SCHEMES,
    Partition,
    client_share,
    load_lines,
    make_partition,
)
from fedpatch_app.errors import ConfigError, DataError
from fedpatch_app.settings import RunSettings

DEFAULTS = RunSettings()

CATEGORY_MAPPING = {
    0: ("engine_wiring",),
    1: ("underbody_pipes", "underbody_screw"),
    2: ("pipe_staple", "tank_screw"),
    3: ("pipe_clip",),
}


def split(
    root: Path,
    scheme: str,
    num_clients: int = DEFAULTS.num_clients,
    alpha: float = DEFAULTS.dirichlet_alpha,
    seed: int = DEFAULTS.seed,
    categories: list[str] | None = None,
) -> Partition:
    """`make_partition` with the run settings' defaults for what a test leaves out."""
    return make_partition(root, scheme, num_clients, alpha, seed, categories, layout="auto")


@pytest.fixture(scope="module")
def categories(tiny_root: Path) -> dict:
    return {c: load_category(tiny_root, c) for c in CATEGORIES}


def _check_complete_and_disjoint(partition: Partition, categories: dict) -> None:
    for cat, category in categories.items():
        for split, expected in (("train", category.train_rel), ("test", category.test_rel)):
            held = [p for s in partition.clients for p in getattr(s, split).get(cat, [])]
            dupes = [p for p, n in Counter(held).items() if n > 1]
            assert not dupes, f"{cat} {split} images in two clients: {dupes}"
            assert sorted(held) == sorted(expected), f"{cat} {split} incomplete"


def _check_test_follows_train(partition: Partition, categories: dict) -> None:
    """Test images of every defect type go to clients in proportion to their train share."""
    for cat, category in categories.items():
        train = [len(s.train.get(cat, [])) for s in partition.clients]
        by_defect = Counter(s.defect for s in category.test)
        for defect, n in by_defect.items():
            prefix = f"test/{defect}/"
            for share, n_train in zip(partition.clients, train, strict=True):
                got = sum(1 for p in share.test.get(cat, []) if p.startswith(prefix))
                quota = n * n_train / sum(train)
                assert abs(got - quota) < 1, (cat, defect, share.client, got, quota)
                if n_train == 0:
                    assert got == 0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_complete_disjoint_and_proportional(tiny_root: Path, categories: dict, scheme: str) -> None:
    partition = split(tiny_root, scheme=scheme, num_clients=5, alpha=0.5, seed=0)
    assert partition.scheme == scheme and partition.num_clients == 5
    assert [s.client for s in partition.clients] == list(range(5))
    _check_complete_and_disjoint(partition, categories)
    _check_test_follows_train(partition, categories)
    assert all(s.num_train > 0 for s in partition.clients)


def test_category_mapping(tiny_root: Path, categories: dict) -> None:
    partition = split(tiny_root, scheme="category", seed=0)
    for client, cats in CATEGORY_MAPPING.items():
        assert partition.clients[client].categories == tuple(c for c in CATEGORIES if c in cats)
    qc = partition.clients[4]
    assert qc.categories == CATEGORIES
    for cat, category in categories.items():
        n = len(category.train)
        assert len(qc.train[cat]) == max(1, round(0.1 * n))
        owner = next(c for c, cats in CATEGORY_MAPPING.items() if cat in cats)
        assert len(partition.clients[owner].train[cat]) == n - len(qc.train[cat])
    assert client_share(partition, 3) is partition.clients[3] is partition.client(3)
    with pytest.raises(ConfigError, match="client 7"):
        client_share(partition, 7)


def test_category_needs_five_clients(tiny_root: Path) -> None:
    with pytest.raises(ConfigError, match="exactly 5 clients"):
        split(tiny_root, scheme="category", num_clients=3)


def test_category_subset(tiny_root: Path) -> None:
    partition = split(tiny_root, scheme="category", categories=["pipe_clip"])
    assert partition.categories == ("pipe_clip",)
    assert [s.num_train for s in partition.clients] == [0, 0, 0, 7, 1]


def test_iid_balanced(tiny_root: Path, categories: dict) -> None:
    partition = split(tiny_root, scheme="iid", num_clients=3, seed=4)
    for cat, category in categories.items():
        sizes = [len(s.train[cat]) for s in partition.clients]
        assert sum(sizes) == len(category.train) and max(sizes) - min(sizes) <= 1
    _check_complete_and_disjoint(partition, categories)


def test_dirichlet_every_client_gets_data(tiny_root: Path, categories: dict) -> None:
    partition = split(tiny_root, scheme="dirichlet", num_clients=8, alpha=0.05, seed=1)
    assert all(s.num_train > 0 for s in partition.clients)
    _check_complete_and_disjoint(partition, categories)
    _check_test_follows_train(partition, categories)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_seeded(tiny_root: Path, scheme: str) -> None:
    a = split(tiny_root, scheme=scheme, seed=0).to_json()
    b = split(tiny_root, scheme=scheme, seed=0).to_json()
    c = split(tiny_root, scheme=scheme, seed=1).to_json()
    assert a == b
    assert a["clients"] != c["clients"]


def test_lines_from_yaml_numbers_from_the_settings(tiny_root: Path) -> None:
    lines = load_lines()
    assert lines.source == CONF_DIR / "category.yaml"
    assert {line.client: line.categories for line in lines.lines} == {
        0: ("engine_wiring",),
        1: ("underbody_pipes", "underbody_screw"),
        2: ("tank_screw", "pipe_staple"),
        3: ("pipe_clip",),
    }
    assert lines.mixed_qc.client == 4 and lines.num_clients == 5
    assert SCHEMES == ("category", "iid", "dirichlet")
    assert sorted(p.name for p in CONF_DIR.iterdir()) == ["category.yaml"]
    assert split(tiny_root, "iid").num_clients == DEFAULTS.num_clients == 5


def test_json_round_trip(tiny_root: Path) -> None:
    partition = split(tiny_root, scheme="dirichlet", seed=2)
    data = json.loads(json.dumps(partition.to_json()))
    assert set(data) == {"scheme", "seed", "clients"}
    assert set(data["clients"][0]) == {"client", "train", "test"}
    assert Partition.from_json(data) == partition
    # a path in two clients is rejected
    cat, paths = next(iter(data["clients"][0]["train"].items()))
    data["clients"][1]["train"].setdefault(cat, []).append(paths[0])
    with pytest.raises(ConfigError, match="also in client 0"):
        Partition.from_json(data)
    with pytest.raises(ConfigError, match="unknown scheme"):
        Partition.from_json({"scheme": "x", "seed": 0, "clients": []})


def test_cli_json_and_table(tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["partition", "--data-root", str(tiny_root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scheme"] == "category" and data["seed"] == 0
    assert [c["client"] for c in data["clients"]] == [0, 1, 2, 3, 4]
    assert all(p.startswith("train/good/") for p in data["clients"][0]["train"]["engine_wiring"])
    assert main(["partition", "--scheme", "iid", "--data-root", str(tiny_root)]) == 0
    table = capsys.readouterr().out
    assert "iid partition, seed 0, 5 clients" in table
    assert any(line.split()[:2] == ["4", "underbody_screw"] for line in table.splitlines())
    assert main(["partition", "--scheme", "iid", "--num-clients", "0", "--data-root", "x"]) == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_errors(tiny_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown partition scheme"):
        split(tiny_root, scheme="random")
    with pytest.raises(ConfigError, match="must be >= 1"):
        split(tiny_root, scheme="iid", num_clients=0)
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        split(tiny_root, scheme="dirichlet", alpha=0.0)
    with pytest.raises(ConfigError, match="only 8 train images"):
        split(tiny_root, scheme="iid", num_clients=9)
    with pytest.raises(ConfigError, match="only 8 train images"):
        split(tiny_root, scheme="dirichlet", num_clients=9, categories=["pipe_clip"])
    with pytest.raises(DataError, match="no category under"):
        split(tmp_path, scheme="iid")
    with pytest.raises(DataError, match="not found"):
        split(tmp_path, scheme="iid", categories=["pipe_clip"])


def test_category_too_few_train_images(tiny_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "pipe_staple", root / "pipe_staple")
    for p in sorted((root / "pipe_staple" / "train" / "good").glob("*.png"))[1:]:
        p.unlink()
    with pytest.raises(ConfigError, match="pipe_staple has 1 train images"):
        split(root, scheme="category")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("clients: []\n", "'clients' must be a non-empty list"),
        ("num_clients: 5\nclients: []\n", "unknown keys num_clients"),
        ("seed: 0\nclients: []\n", "unknown keys seed"),
        ("clients: [\n", "cannot read"),
        ("fraction: 1.5", "'fraction' must be in"),
    ],
)
def test_yaml_validation(tmp_path: Path, text: str, match: str) -> None:
    if text.startswith("fraction"):
        text = (CONF_DIR / "category.yaml").read_text().replace("fraction: 0.1", text)
    (tmp_path / "category.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_lines(tmp_path)
    assert "category.yaml" in str(info.value)


def test_category_yaml_must_cover_every_category(tmp_path: Path) -> None:
    text = (CONF_DIR / "category.yaml").read_text().replace("[pipe_clip]", "[pipe_staple]")
    (tmp_path / "category.yaml").write_text(text)
    with pytest.raises(ConfigError, match="pipe_staple is already assigned to client 2"):
        load_lines(tmp_path)
