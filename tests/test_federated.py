"""The federated run driven in-process: the real ServerApp and ClientApp code, no Ray.

`InProcessGrid` hands every message to the real `client_app.app` with a fresh Context,
so these tests exercise the protocol, the message checks, the client handlers and the
results the server writes, on tiny synthetic data (random weights, 64 px input).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, Context, Message, MessageType, RecordDict

import client_app
import server_app
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.data import ensure_synthetic, resolve_dataset
from fedpatch_app.federated.inprocess import InProcessGrid
from fedpatch_app.federated.protocol.server import resolve_features, run_server
from fedpatch_app.federated.registry import FederationError
from fedpatch_app.settings import from_run_config
from fedpatch_drills.client_app import tampered_app

CATS = ("pipe_clip", "pipe_staple")
BASE = {
    "weights": "none",
    "image-size": 64,
    "device": "cpu",
    "categories": ",".join(CATS),
    "synthetic-scale": "tiny",
    "wait-timeout": 0,
}


def server_context(run_config: dict[str, Any], run_id: int = 7) -> Context:
    return Context(
        run_id=run_id, node_id=1, node_config={}, state=RecordDict(), run_config=run_config
    )


def partition_nodes(n: int) -> list[dict[str, Any]]:
    return [{"partition-id": i, "num-partitions": n} for i in range(n)]


# --------------------------------------------------------------------------- the normal run


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five clients, category partition, built-in synthetic data."""
    out = tmp_path_factory.mktemp("fed_normal")
    run_config = {
        **BASE,
        "dataset": "synthetic",
        "out-dir": str(out),
        "run-name": "normal",
        "partition": "category",
        "num-clients": 5,
        "min-clients": 5,
        "write-maps": True,
    }
    grid = InProcessGrid(client_app.app, partition_nodes(5), run_config)
    outcome = run_server(grid, server_context(run_config))
    return {"outcome": outcome, "grid": grid, "run_config": run_config}


@pytest.mark.slow
def test_normal_run_writes_everything(normal_run: dict[str, Any]) -> None:
    from fedpatch_app.model.embedding import FeatureSpec
    from fedpatch_app.model.patchcore import Bank, coreset_size
    from fedpatch_app.results.schema import load_results

    outcome = normal_run["outcome"]
    run_dir: Path = outcome.run_dir
    assert run_dir == (Path(normal_run["run_config"]["out-dir"]) / "normal").resolve()
    results = load_results(run_dir / "results.json")
    assert results["run"]["kind"] == "federated"
    assert results["dataset"] == "synthetic"
    assert any("SYNTHETIC" in w for w in results["warnings"])
    assert sorted(results["categories"]) == sorted(CATS)
    for name in ("report.md", "curves.npz"):
        assert (run_dir / name).is_file()
    fed = results["federated"]
    assert fed["partition"]["scheme"] == "category"
    assert fed["dropped"] == []
    assert [c["status"] for c in fed["clients"]] == ["evaluated"] * 5
    assert sorted(c["partition_id"] for c in fed["clients"]) == [0, 1, 2, 3, 4]
    for key in ("train_up_total", "evaluate_down_uploaded", "query_up_total"):
        assert fed["bytes"][key] > 0
    # The banks are broadcast: uploaded once, received by every node.
    assert fed["bytes"]["evaluate_down_total"] == 5 * fed["bytes"]["evaluate_down_uploaded"]
    for phase in ("train", "merge", "evaluate", "query"):
        assert fed["seconds"][phase] >= 0
    # Where the time goes: every phase of the run, measured (clients report theirs).
    phases = results["run"]["phases"]
    expected = "extraction local_coreset upload merge broadcast scoring statistics pooling"
    assert set(phases) == set(expected.split())
    assert phases["extraction"] > 0 and phases["scoring"] > 0 and phases["statistics"] > 0
    assert all(c["seconds"]["extraction"] > 0 for c in fed["clients"] if c["train_images"])
    spec = FeatureSpec.from_dict(results["run"]["features"]["spec"])
    assert results["run"]["data"]["kind"] == "synthetic" and results["run"]["status"] == "completed"
    for cat in CATS:
        block = results["categories"][cat]
        info = fed["banks"][cat]
        # Global size = coreset-ratio x all clients' patches (the centralized size).
        assert info["size"] == coreset_size(info["total_patches"], 0.1)
        assert info["union_rows"] > info["size"]
        assert len(info["clients"]) >= 2  # the owning line and the mixed-QC client
        bank = Bank.load(run_dir / "model" / "banks" / f"{cat}.npz", expected_spec=spec)
        assert bank.size == info["size"] == block["bank_size"]
        assert bank.radius == pytest.approx(info["covering_radius"])
        # Every test image of the category was scored by exactly one client.
        held = sum(c["test_images"].get(cat, 0) for c in fed["clients"])
        assert held == block["counts"]["test_good"] + block["counts"]["test_defective"]
        rows = (run_dir / "scores" / f"{cat}.csv").read_text().strip().splitlines()
        assert len(rows) == held + 1
        assert block["counts"]["train"] == sum(
            c["train_images"].get(cat, 0) for c in fed["clients"]
        )
        assert 0.0 <= block["auc_spro"]["0.3"] <= 1.0


@pytest.mark.slow
def test_pooled_metrics_equal_centralized_on_the_same_maps(normal_run: dict[str, Any]) -> None:
    """The server only ever saw statistics; the clients wrote their 16-bit maps. The
    centralized evaluation of those maps must give exactly the same numbers."""
    from fedpatch_app.data.autovi import load_category
    from fedpatch_app.metrics.evaluate import evaluate_category
    from fedpatch_app.results.official_maps import read_category_maps

    outcome = normal_run["outcome"]
    results = outcome.results
    root = Path(results["run"]["data"]["root"])
    for cat in CATS:
        category = load_category(root, cat)
        maps, scaling = read_category_maps(outcome.run_dir / "maps", category, dtype=np.uint16)
        block, curves = evaluate_category(category, maps)
        fed = results["categories"][cat]
        assert fed["auc_spro"] == block["auc_spro"]
        assert fed["auc_spro_per_defect"] == block["auc_spro_per_defect"]
        assert fed["image_auroc"] == block["image_auroc"]
        for key in ("test_good", "test_defective"):
            assert fed["counts"][key] == block["counts"][key]
        # Every training image is in a bank or held out to calibrate the thresholds.
        assert fed["counts"]["train"] + fed["counts"]["calibration"] == len(category.train)
        assert fed["counts"]["calibration"] >= 1 and "thresholds" in fed
        assert fed["map_scaling"] == scaling.to_dict()


LEVELS, PARTS = ("image", "pixel"), ("levels", "counts")


@pytest.mark.slow
def test_messages_carry_no_maps_and_match_their_phase(normal_run: dict[str, Any]) -> None:
    """Every array of every reply is one the protocol names, and none can hold a map: train
    replies hold coresets (rows of 1024 features, fewer than the client's patches),
    evaluate replies one score per test image the client holds, query replies exactly the
    AUC-sPRO statistics (validated as histograms: 65,536 level counts summing to the
    client's pixels, sparse rows of strictly increasing levels)."""
    from fedpatch_app.data.autovi import NATIVE_SIZES
    from fedpatch_app.federated.codec_source_check import AFFECTED, CHECK
    from fedpatch_app.federated.codec_stats import CALIBRATION_PREFIX
    from fedpatch_app.metrics import SproStatistics
    from fedpatch_app.metrics.thresholds import CalibrationStats

    grid: InProcessGrid = normal_run["grid"]
    clients = {c["node_id"]: c for c in normal_run["outcome"].results["federated"]["clients"]}
    kinds = [msg.metadata.message_type for msg, _ in grid.history]
    assert kinds == [MessageType.TRAIN] * 5 + [MessageType.EVALUATE] * 5 + [MessageType.QUERY] * 5
    # The banks go out as ONE RecordDict shared by all evaluate messages.
    evaluate = [msg for msg, _ in grid.history if msg.metadata.message_type == MessageType.EVALUATE]
    assert len({id(m.content) for m in evaluate}) == 1
    patches_per_image = (64 // 8) ** 2  # 400x400 images at 64 px: an 8x8 patch grid
    banks = normal_run["outcome"].results["federated"]["banks"]
    sources = {cat: len(b.get("source_check", {}).get("sources", {})) for cat, b in banks.items()}
    for msg, reply in grid.history:
        assert reply.metadata.reply_to_message_id == msg.metadata.message_id
        assert not reply.has_error()
        client = clients[msg.metadata.dst_node_id]
        records = dict(reply.content.array_records.items())
        kind = msg.metadata.message_type
        if kind == MessageType.TRAIN:
            assert set(records) == {M.CORESETS}
            for cat, arr in records[M.CORESETS].items():
                rows, dim = arr.shape
                assert dim == 1024 and 0 < rows < client["train_images"][cat] * patches_per_image
        elif kind == MessageType.EVALUATE:
            assert M.SCORES in records and set(records) <= {M.SCORES, CHECK, AFFECTED}
            shapes = {cat: tuple(a.shape) for cat, a in records[M.SCORES].items()}
            assert shapes == {cat: (n,) for cat, n in client["test_images"].items() if n}
            # The source check: an AUROC with the bank and one per source left out, and
            # a count per source (the same categories in both records).
            checked = {cat: tuple(a.shape) for cat, a in records.get(CHECK, {}).items()}
            counted = {cat: tuple(a.shape) for cat, a in records.get(AFFECTED, {}).items()}
            assert checked == {cat: (1 + sources[cat],) for cat in checked}
            assert counted == {cat: (sources[cat],) for cat in checked}
        else:
            held = {cat: n for cat, n in client["test_images"].items() if n}
            calibrated = {
                k.removeprefix(CALIBRATION_PREFIX)
                for k in records
                if k.startswith(CALIBRATION_PREFIX)
            }
            assert set(records) == {f"{M.STATS_PREFIX}{cat}" for cat in held} | {
                f"{CALIBRATION_PREFIX}{cat}" for cat in calibrated
            }
            for cat in calibrated:
                arrays = {k: a.numpy() for k, a in records[f"{CALIBRATION_PREFIX}{cat}"].items()}
                assert set(arrays) == {f"{what}_{part}" for what in LEVELS for part in PARTS}
                calib = CalibrationStats.from_arrays(arrays, cat)  # increasing levels, counts > 0
                width, height = NATIVE_SIZES[cat]
                assert calib.pixels.total == calib.images.total * width * height
            for cat, n in held.items():
                record = records[f"{M.STATS_PREFIX}{cat}"]
                stats = SproStatistics.from_arrays({k: a.numpy() for k, a in record.items()})
                width, height = NATIVE_SIZES[cat]
                assert stats.n_bins == 65536 and stats.n_images == n
                assert int(stats.pixel_counts.sum()) == n * width * height


# --------------------------------------------------------------------------- failures


def _tamper(node_id: int, msg: Message, reply: Message) -> Message:
    """Nodes 1002-1004 send bad coresets (after computing real ones)."""
    if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
        return reply
    coresets = reply.content.array_records.get(M.CORESETS)
    if not coresets:
        return reply
    cat = next(iter(coresets.keys()))
    good = coresets[cat].numpy()
    if node_id == 1002:
        bad = good.copy()
        bad[0, 0] = np.nan
    elif node_id == 1003:
        bad = good[:, :100].copy()
    elif node_id == 1004:
        bad = np.concatenate([good] * 20)
    else:
        return reply
    coresets[cat] = Array(bad)
    return reply


@pytest.mark.slow
def test_bad_clients_are_dropped_and_the_run_completes(tiny_root: Path, tmp_path: Path) -> None:
    run_config = {
        **BASE,
        "dataset": "autovi",
        "data-root": str(tiny_root),
        "out-dir": str(tmp_path),
        "run-name": "failures",
        "partition": "iid",
        "num-clients": 8,
        "min-clients": 3,
    }
    nodes = partition_nodes(8)
    nodes[0]["data-root"] = str(tmp_path / "missing")  # node 1001 raises in its ClientApp
    grid = InProcessGrid(tampered_app(_tamper), nodes, run_config, offline=[1005])
    outcome = run_server(grid, server_context(run_config))
    results = json.loads((outcome.run_dir / "results.json").read_text())
    dropped = {d["node_id"]: d for d in results["federated"]["dropped"]}
    assert sorted(dropped) == [1001, 1002, 1003, 1004, 1005]
    assert "error 2" in dropped[1001]["reason"] and "does not exist" in dropped[1001]["reason"]
    assert "NaN" in dropped[1002]["reason"]
    assert "dimension 100" in dropped[1003]["reason"]
    assert "exceeds the allowed" in dropped[1004]["reason"]
    # The SuperLink's "node unavailable" error comes from node 1: mapped back to 1005.
    assert "error 5" in dropped[1005]["reason"]
    assert all(d["phase"] == "train" for d in dropped.values())
    # named by partition too (an error reply carries it in its text)
    assert dropped[1001]["partition_id"] == 0 and dropped[1002]["partition_id"] == 1
    for node_id in dropped:
        assert any(f"node {node_id}" in w for w in results["warnings"])
    kept = [c for c in results["federated"]["clients"] if c["status"] == "evaluated"]
    assert sorted(c["node_id"] for c in kept) == [1006, 1007, 1008]
    assert sorted(results["categories"]) == sorted(CATS)
    # Only the kept clients' test images are pooled.
    for cat in CATS:
        counts = results["categories"][cat]["counts"]
        held = sum(c["test_images"].get(cat, 0) for c in kept)
        assert counts["test_good"] + counts["test_defective"] == held


def test_fewer_clients_than_min_clients_is_a_clear_error(tiny_root: Path, tmp_path: Path) -> None:
    run_config = {
        **BASE,
        "dataset": "autovi",
        "data-root": str(tiny_root),
        "out-dir": str(tmp_path),
        "run-name": "few",
        "num-clients": 5,
        "min-clients": 3,
    }
    grid = InProcessGrid(client_app.app, partition_nodes(2), run_config)
    with pytest.raises(FederationError, match=r"only 2 client\(s\) connected .* min-clients is 3"):
        server_app.app(grid, server_context(run_config))
    assert grid.history == []  # nothing was sent


def test_too_many_failures_is_a_clear_error(tiny_root: Path, tmp_path: Path) -> None:
    run_config = {
        **BASE,
        "dataset": "autovi",
        "data-root": str(tiny_root),
        "out-dir": str(tmp_path),
        "run-name": "lost",
        "partition": "iid",
        "num-clients": 2,
        "min-clients": 2,
    }
    nodes = partition_nodes(2)
    nodes[0]["data-root"] = str(tmp_path / "missing")
    grid = InProcessGrid(client_app.app, nodes, run_config, offline=[1002])
    with pytest.raises(FederationError) as info:
        run_server(grid, server_context(run_config))
    text = str(info.value)
    assert "train: only 0 client(s) remain, min-clients is 2" in text
    assert "node 1001 (partition 0): train: error 2" in text and "does not exist" in text
    assert "node 1002 (partition ?): train: error 5 (node unavailable)" in text
    # The client's own name is said once, not repeated inside the reason.
    assert text.count("partition 0 (node 1001)") == 0


def test_replies_to_unknown_messages_are_ignored(tiny_root: Path, tmp_path: Path) -> None:
    """A reply whose reply_to id matches nothing sent is not attributed to any node."""
    from fedpatch_app.federated.protocol.federation import Federation
    from fedpatch_app.federated.protocol.link import GridLink
    from fedpatch_app.federated.protocol.server import make_plan
    from fedpatch_app.federated.registry import ClientRegistry
    from fedpatch_app.model.embedding import FeatureSpec

    settings = from_run_config({**BASE, "data-root": str(tiny_root), "dataset": "autovi"})
    spec = FeatureSpec(weights="none", image_size=64)
    plan = make_plan(settings, resolve_dataset(settings), spec, "k", tmp_path)

    class StrayGrid(InProcessGrid):
        """Answers the first instruction with a reply pointing at an unknown message."""

        def send_and_receive(self, messages, *, timeout=None):
            sent = list(messages)
            self.push_messages(sent)
            stray = Message(
                M.encode_train_reply({}, {}, fingerprint=plan.fingerprint, partition_id=0),
                reply_to=sent[0],
            )
            stray.metadata.__dict__["_reply_to_message_id"] = "unknown"
            return [stray]

    registry = ClientRegistry(settings.min_clients, settings.round_timeout)
    federation = Federation(plan, rule=None, registry=registry)  # the merge is not reached
    grid = StrayGrid(client_app.app, [{}], {})
    link = GridLink(grid, registry, settings.round_timeout)
    with pytest.raises(FederationError, match="no reply within the timeout"):
        federation.accept(federation.train(link))


# --------------------------------------------------------------------------- data and weights


def test_auto_dataset_falls_back_to_synthetic(tmp_path: Path, monkeypatch) -> None:
    """Only the untouched default data-root (data/autovi, absent here) falls back."""
    monkeypatch.chdir(tmp_path)
    settings = from_run_config(
        {**BASE, "dataset": "auto", "out-dir": str(tmp_path), "categories": "pipe_staple"}
    )
    choice = resolve_dataset(settings)
    assert choice.dataset == "synthetic"
    assert choice.categories == ("pipe_staple",)
    assert (choice.data_root / "pipe_staple" / "train" / "good").is_dir()
    assert "SYNTHETIC" in choice.warnings[0]
    # Real AutoVI is never replaced: "autovi" keeps the path even when it is not here.
    settings = from_run_config({**BASE, "dataset": "autovi", "data-root": str(tmp_path / "none")})
    assert resolve_dataset(settings).dataset == "autovi"


def test_auto_dataset_uses_autovi_when_present(tiny_root: Path) -> None:
    settings = from_run_config({**BASE, "dataset": "auto", "data-root": str(tiny_root)})
    choice = resolve_dataset(settings)
    assert choice.dataset == "autovi" and choice.warnings == []
    assert choice.categories == CATS


def test_synthetic_generation_happens_once_under_concurrency(tmp_path: Path, monkeypatch) -> None:
    import fedpatch_app.data.synthetic as synthetic
    from fedpatch_app.data.synthetic.marker import write_marker

    calls: list[int] = []

    def slow_generate(root, scale, seed, categories, kind):
        calls.append(1)
        time.sleep(0.3)
        Path(root).mkdir(parents=True, exist_ok=True)
        write_marker(Path(root), kind, scale, seed, list(categories))  # as generate does, last
        return {}

    monkeypatch.setattr(synthetic, "generate", slow_generate)
    root = tmp_path / "syn"
    threads = [
        threading.Thread(target=ensure_synthetic, args=(root, "tiny", 0, ["pipe_clip"], "photo"))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    ensure_synthetic(root, "tiny", 0, ["pipe_clip", "tank_screw"], "photo")  # only the new one
    assert len(calls) == 2
    ensure_synthetic(root, "tiny", 1, ["pipe_clip"], "photo")  # another seed: regenerated
    assert len(calls) == 3


def test_pretrained_stand_in_only_for_synthetic_data(tmp_path: Path, monkeypatch) -> None:
    """Without WideResNet's ImageNet file: synthetic data get pretrained EfficientNet-Lite0
    (never random features); real AutoVI keeps the asked-for features for the clients."""
    from fedpatch_app.federated.data import DatasetChoice
    from fedpatch_app.model.backbones import wide_resnet

    monkeypatch.setattr(wide_resnet, "imagenet_cache_path", lambda: tmp_path / "absent.pth")
    settings = from_run_config({"weights": "imagenet"})
    spec, warnings = resolve_features(settings, DatasetChoice("synthetic", tmp_path, CATS))
    assert (spec.backbone, spec.weights) == ("efficientnet_lite0", "imagenet")
    assert "PRETRAINED efficientnet_lite0" in warnings[0]
    spec, warnings = resolve_features(settings, DatasetChoice("autovi", tmp_path, CATS))
    assert (spec.backbone, spec.weights, warnings) == ("wide_resnet50_2", "imagenet", ())
    random = from_run_config({"weights": "none"})
    spec, warnings = resolve_features(random, DatasetChoice("autovi", tmp_path, CATS))
    assert spec.weights == "none" and warnings[0].startswith("RANDOM backbone weights")


def test_client_rejects_a_forged_plan(tiny_root: Path, tmp_path: Path) -> None:
    """The client checks the server's spec against its fingerprint before any work."""
    from fedpatch_app.federated.inprocess import set_task_identity
    from fedpatch_app.federated.protocol.server import make_plan
    from fedpatch_app.model.embedding import FeatureSpec

    set_task_identity()
    settings = from_run_config({**BASE, "data-root": str(tiny_root), "dataset": "autovi"})
    spec = FeatureSpec(weights="none", image_size=64)
    plan = make_plan(settings, resolve_dataset(settings), spec, "k", tmp_path)
    record = plan.to_config()
    record["fingerprint"] = "0123456789abcdef"
    msg = Message(RecordDict({M.CONFIG: record}), 1001, MessageType.TRAIN)
    context = Context(
        run_id=1,
        node_id=1001,
        node_config={"partition-id": 0, "num-partitions": 5},
        state=RecordDict(),
        run_config={},
    )
    reply = client_app.app(msg, context)
    assert reply.has_error() and reply.error.code == 2
    assert reply.error.reason.startswith("partition 0 (node 1001): ModelError")
    assert "fingerprint" in reply.error.reason


def test_run_inprocess_waits_for_its_clients(tiny_root: Path, tmp_path: Path) -> None:
    from fedpatch_app.federated.inprocess import run_inprocess

    run_config = {
        **BASE,
        "dataset": "autovi",
        "data-root": str(tiny_root),
        "out-dir": str(tmp_path),
        "num-clients": 1,
        "min-clients": 1,
    }
    with pytest.raises(FederationError, match=r"only 0 client\(s\) connected"):
        run_inprocess(run_config, node_configs=[])


@pytest.mark.slow
def test_same_data_give_the_same_banks_whatever_the_node_ids(tmp_path: Path) -> None:
    """Node ids are random in a deployment and replies arrive in any order: the merge must
    not depend on them (the IID split puts each category on several clients)."""
    from fedpatch_app.model.patchcore import Bank

    banks = []
    for first_node_id, nodes in ((1001, partition_nodes(5)), (90_000, partition_nodes(5)[::-1])):
        run_config = {
            **BASE,
            "dataset": "synthetic",
            "categories": "pipe_clip",
            "out-dir": str(tmp_path),
            "run-name": f"ids-{first_node_id}",
            "partition": "iid",
            "num-clients": 5,
            "min-clients": 5,
        }
        grid = InProcessGrid(client_app.app, nodes, run_config, first_node_id=first_node_id)
        outcome = run_server(grid, server_context(run_config))
        banks.append(Bank.load(outcome.run_dir / "model" / "banks" / "pipe_clip.npz"))
    np.testing.assert_array_equal(banks[0].features, banks[1].features)
