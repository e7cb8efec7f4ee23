"""A run's figures do not depend on the node ids, nor on the order replies arrive in.

A SuperLink draws node ids at random and hands replies over as they arrive. The server
merges the clients' coresets, statistics and histograms in an order the data fixes (the
partition each client trains as), so the same federation gives the same bits whatever
the draw: the same run in-process with other node ids and shuffled replies writes the
same metrics, thresholds, scalings and banks, bit for bit.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, RecordDict

import client_app
from fedpatch_app.federated.inprocess import InProcessGrid
from fedpatch_app.federated.protocol.server import run_server

CATS = ("pipe_clip",)
CLIENTS = 5
#: What results.json says of a category that is a figure of the run (not a time).
FIGURES = (
    "auc_spro",
    "auc_spro_per_defect",
    "image_auroc",
    "counts",
    "bank_size",
    "covering_radius",
    "map_scaling",
    "thresholds",
    "clients",
)


def _run(out: Path, data: Path, name: str, node_ids: list[int], reply_seed: int | None) -> Path:
    run_config = {
        "weights": "none",
        "image-size": 64,
        "device": "cpu",
        "batch-size": 8,
        "categories": ",".join(CATS),
        "wait-timeout": 0,
        "dataset": "autovi",
        "data-root": str(data),
        "partition": "iid",
        "num-clients": CLIENTS,
        "min-clients": CLIENTS,
        "out-dir": str(out),
        "run-name": name,
    }
    nodes = [
        {"partition-id": i, "num-partitions": CLIENTS, "data-root": str(data)}
        for i in range(CLIENTS)
    ]
    grid = InProcessGrid(
        client_app.app, nodes, run_config, node_ids=node_ids, reply_seed=reply_seed
    )
    context = Context(
        run_id=3, node_id=1, node_config={}, state=RecordDict(), run_config=run_config
    )
    return run_server(grid, context).run_dir


#: The partitions in the order of the drawn node ids. Merged in this order, pipe_clip's
#: statistics on this data give another last bit of AUC-sPRO@0.3 than in partition order
#: (as a deployment's random node ids did).
DRAWN_ORDER = (0, 2, 4, 1, 3)


@pytest.fixture(scope="module")
def two_draws(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same federation twice: node ids in partition order with replies in order, and
    node ids drawn at random (as a SuperLink does) with the replies shuffled."""
    import torch

    out = tmp_path_factory.mktemp("node_order")
    draw = sorted(random.Random(5).sample(range(2, 2**62), CLIENTS))
    drawn = [draw[DRAWN_ORDER.index(p)] for p in range(CLIENTS)]
    # One thread, as the deployment tests run: the features' last bits, and so which
    # orders give other sums, depend on the thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ordered = _run(out, tiny_root, "ordered", [1001 + i for i in range(CLIENTS)], None)
        return ordered, _run(out, tiny_root, "drawn", drawn, reply_seed=11)
    finally:
        torch.set_num_threads(threads)


def _results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def test_the_node_ids_were_drawn_differently(two_draws: tuple[Path, Path]) -> None:
    """The case really differs: other node ids, not in the partitions' order."""
    ordered, drawn = (_results(d)["federated"]["clients"] for d in two_draws)
    ids = [{c["partition_id"]: c["node_id"] for c in run} for run in (ordered, drawn)]
    assert ids[0] == {p: 1001 + p for p in range(CLIENTS)}
    assert set(ids[0].values()).isdisjoint(ids[1].values())
    assert tuple(sorted(ids[1], key=ids[1].__getitem__)) == DRAWN_ORDER


def test_figures_and_banks_are_bit_identical(two_draws: tuple[Path, Path]) -> None:
    ordered, drawn = two_draws
    a, b = _results(ordered), _results(drawn)
    assert sorted(a["categories"]) == sorted(b["categories"]) == sorted(CATS)
    for cat in CATS:
        got, want = b["categories"][cat], a["categories"][cat]
        assert got.get("thresholds") is not None, cat
        for key in FIGURES:
            assert got.get(key) == want.get(key), (cat, key, got.get(key), want.get(key))
        assert b["federated"]["map_scaling"][cat] == a["federated"]["map_scaling"][cat]
        for run_dir in (ordered, drawn):
            assert (run_dir / "model" / "banks" / f"{cat}.npz").is_file()
        with (
            np.load(ordered / "model" / "banks" / f"{cat}.npz", allow_pickle=False) as x,
            np.load(drawn / "model" / "banks" / f"{cat}.npz", allow_pickle=False) as y,
        ):
            assert sorted(x.files) == sorted(y.files)
            for name in x.files:
                assert x[name].tobytes() == y[name].tobytes(), (cat, name)
    with np.load(ordered / "curves.npz") as x, np.load(drawn / "curves.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for name in x.files:
            assert x[name].tobytes() == y[name].tobytes(), name


def test_data_order_is_by_partition_then_content() -> None:
    """Partitions first, in order; nodes that name none (-1, or not known) after, by what
    they sent; neither the node ids nor the order given matter."""
    from fedpatch_app.federated.registry import ClientRegistry

    registry = ClientRegistry(1, 10)
    partitions = {900: 2, 5: -1, 7: None, 50: 0, 3: -1}
    registry.register(partitions)
    for node, pid in partitions.items():
        registry.clients[node].partition_id = pid
    content = {900: "z", 5: "b", 7: "c", 50: "y", 3: "a"}
    for given in ([5, 900, 7, 3, 50], [7, 5, 3, 50, 900]):
        assert registry.data_order(given, content.__getitem__) == [50, 900, 3, 5, 7]


def test_fairness_figures_do_not_depend_on_the_clients_order() -> None:
    from fedpatch_app.metrics.fairness import client_means, spread

    values = {"client 0": 0.1, "client 1": 0.2, "client 2": 0.3}
    backwards = dict(reversed(values.items()))
    assert sum(values.values()) != sum(backwards.values())  # the float sums differ
    assert spread(values) == spread(backwards)
    # Two nodes that name no partition are two members, not one "client -1".
    clients = [
        {"partition_id": -1, "node_id": n, "local_metrics": {"pipe_clip.auc": v}}
        for n, v in ((11, 0.5), (12, 0.7))
    ]
    assert client_means(clients, "auc") == {"node 11": 0.5, "node 12": 0.7}
