"""Dishonest clients against the real ServerApp and ClientApp (in-process grid, tiny
synthetic data, random features at 64 px): each defence keeps its attack out.

The attacks are those of `fedpatch_drills.attacks`; what they do to the metrics
without the defences, and how much the defences recover, is measured by
`benchmarks/poisoning.py` (docs/security.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Error, Message, MessageType, RecordDict

from fedpatch_app.federated import messages as M
from fedpatch_app.federated.inprocess import InProcessGrid
from fedpatch_app.federated.protocol.server import run_server
from fedpatch_app.federated.registry import FederationError
from fedpatch_app.model.patchcore import Bank
from fedpatch_app.run_status import read_status
from fedpatch_drills.attacks import Attacker, together
from fedpatch_drills.client_app import tampered_app

pytestmark = pytest.mark.slow

CATS = "pipe_clip,pipe_staple"


def config(root: Path, out: Path, name: str, clients: int, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": "autovi",
        "data-root": str(root),
        "categories": CATS,
        "partition": "iid",
        "num-clients": clients,
        "min-clients": 2,
        "weights": "none",
        "image-size": 64,
        "device": "cpu",
        "calibration-fraction": 0.0,
        "out-dir": str(out),
        "run-name": name,
        "wait-timeout": 0,
        **extra,
    }


def nodes(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"partition-id": i, "num-partitions": n, **extra} for i in range(n)]


def serve(grid: InProcessGrid, run_config: dict[str, Any]):
    context = Context(
        run_id=3, node_id=1, node_config={}, state=RecordDict(), run_config=run_config
    )
    return run_server(grid, context)


def keys(n: int) -> tuple[dict[int, bytes], dict[str, str]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem, ssh = {}, {}
    for i in range(n):
        public = ec.generate_private_key(ec.SECP384R1()).public_key()
        pem[1001 + i] = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        ssh[str(i)] = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
    return pem, ssh


@pytest.fixture(scope="module")
def attacked(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four nodes, partition known to the server, keys bound to partitions: node 1001
    plants defect features in its coresets, 1002 reports a map maximum of 1e30, 1003
    claims node 1004's partition."""
    out = tmp_path_factory.mktemp("attacked")
    pem, ssh = keys(4)
    (out / "identities.json").write_text(json.dumps(ssh), encoding="utf-8")
    run_config = config(
        tiny_root, out, "attacked", 4, **{"node-identities": str(out / "identities.json")}
    )
    poisoner = Attacker(1001, "poison", tiny_root)
    tamper = together(
        poisoner,
        Attacker(1002, "extreme", tiny_root),
        Attacker(1003, "impersonate", tiny_root, victim=3),
    )
    grid = InProcessGrid(tampered_app(tamper), nodes(4), run_config, public_keys=pem)
    outcome = serve(grid, run_config)
    return {"results": outcome.results, "run_dir": outcome.run_dir, "poisoner": poisoner}


def test_planted_coreset_rows_stay_out_of_the_bank(attacked: dict[str, Any]) -> None:
    fed = attacked["results"]["federated"]
    support = fed["banks"]["pipe_staple"]["support"]
    verdict = support["clients"]["node 1001 (partition 0)"]
    assert verdict["action"] in ("dropped", "quarantined") and verdict["quarantined"] > 0
    assert any(f["node_id"] == 1001 and "merge" in f["flag"] for f in fed["flagged"])
    planted = attacked["poisoner"].planted["pipe_staple"]
    assert len(planted) > 0
    bank = Bank.load(attacked["run_dir"] / "model" / "banks" / "pipe_staple.npz").features
    distances = np.linalg.norm(bank[:, None, :] - planted[None, :, :], axis=2)
    assert distances.min() > 0  # none of the planted rows is in the bank
    # The honest clients lost no row.
    for label, v in support["clients"].items():
        if not label.startswith("node 1001"):
            assert v["quarantined"] == 0, label


def test_an_extreme_evaluation_reply_cannot_set_the_scaling(attacked: dict[str, Any]) -> None:
    from fedpatch_app.metrics.map_scaling import MapScaling

    results = attacked["results"]
    for cat in CATS.split(","):
        scaling = results["federated"]["map_scaling"][cat]
        assert scaling["clipped"] and scaling["high"] == scaling["bound"] < 1e6
        # The other images keep their 16-bit resolution (under the exact scaling, 1e30
        # would put every one of them on level 0).
        rows = (attacked["run_dir"] / "scores" / f"{cat}.csv").read_text().splitlines()[1:]
        scores = np.array([float(r.split(",")[2]) for r in rows])
        levels = MapScaling(scaling["low"], scaling["high"]).to_uint16(scores[scores < 1e29])
        assert levels.max() > 1000 and len(set(levels.tolist())) == len(levels)
    flags = [f["flag"] for f in results["federated"]["flagged"] if f["node_id"] == 1002]
    assert any("map maximum 1e+30 above the bound" in f for f in flags)


def test_an_impersonator_is_refused_and_the_owner_keeps_its_partition(
    attacked: dict[str, Any],
) -> None:
    fed = attacked["results"]["federated"]
    dropped = {d["node_id"]: d for d in fed["dropped"]}
    assert list(dropped) == [1003]
    assert "claims partition 3, but its key is bound to 2" in dropped[1003]["reason"]
    owner = next(c for c in fed["clients"] if c["node_id"] == 1004)
    assert owner["partition_id"] == 3 and owner["status"] == "evaluated"


def _invalid_range(node_id: int, msg: Message, reply: Message) -> Message:
    """Node 1002's phase-A reply claims a negative map minimum (maps are distances)."""
    if node_id == 1002 and msg.metadata.message_type == MessageType.EVALUATE:
        info = reply.content.config_records[M.INFO]
        for cat in info["categories"].split(","):
            info[f"min.{cat}"] = -1.0
    return reply


def test_test_image_theft_and_caches_of_dropped_clients(tiny_root: Path, tmp_path: Path) -> None:
    """The server does not see the data (each node partitions its own copy): node 1001
    claims every test image, node 1002's phase-A reply is invalid. The thief is named and
    dropped, the others' images are evaluated once each, and no node keeps cached maps."""
    run_config = config(tmp_path / "not-on-the-server", tmp_path, "theft", 4)
    cache = tmp_path / "cache"
    grid = InProcessGrid(
        tampered_app(together(Attacker(1001, "steal", tiny_root), _invalid_range)),
        nodes(4, **{"data-root": str(tiny_root), "cache-dir": str(cache)}),
        run_config,
    )
    results = serve(grid, run_config).results
    dropped = {d["node_id"]: d["reason"] for d in results["federated"]["dropped"]}
    assert sorted(dropped) == [1001, 1002]
    assert "claims test images that nodes 1003, 1004 hold" in dropped[1001]
    assert "map range" in dropped[1002]
    for cat, block in results["categories"].items():
        held = sum(
            c["test_images"].get(cat, 0)
            for c in results["federated"]["clients"]
            if c["status"] == "evaluated"
        )
        assert block["counts"]["test_good"] + block["counts"]["test_defective"] == held
    assert not list(cache.rglob("*.npy")), "cached maps left behind"


def test_a_failure_after_the_merge_keeps_the_banks(tiny_root: Path, tmp_path: Path) -> None:
    def fail_stats(node_id: int, msg: Message, reply: Message) -> Message:
        if msg.metadata.message_type == MessageType.QUERY:
            return Message(Error(2, "statistics failed"), reply_to=msg)
        return reply

    run_config = config(tiny_root, tmp_path, "late-failure", 2)
    grid = InProcessGrid(tampered_app(fail_stats), nodes(2), run_config)
    with pytest.raises(FederationError, match="query: only 0 client"):
        serve(grid, run_config)
    run_dir = tmp_path / "late-failure"
    status = read_status(run_dir)
    assert status["status"] == "failed" and "merge" in status["finished_phases"]
    assert "model/" in status["kept"][0]
    for cat in CATS.split(","):
        assert Bank.load(run_dir / "model" / "banks" / f"{cat}.npz").size > 0


def test_the_source_check_names_a_planter_the_robust_merge_let_through(
    tiny_root: Path, tmp_path: Path
) -> None:
    """With the robust merge off, node 1001's planted defect rows enter the bank; the
    clients' labelled test images show that the bank less its rows finds their defects
    better, and it alone is flagged, by name."""
    run_config = config(tiny_root, tmp_path, "planted", 4, **{"robust-merge": "off"})
    poisoner = Attacker(1001, "poison", tiny_root, categories=("pipe_clip",))
    grid = InProcessGrid(tampered_app(poisoner), nodes(4), run_config)
    fed = serve(grid, run_config).results["federated"]
    check = fed["banks"]["pipe_clip"]["source_check"]
    assert check["sources"]["0"]["flagged"], check
    assert check["sources"]["0"]["gain"] > 0.05  # the default source-check-gain
    flags = [f for f in fed["flagged"] if "may hide defects" in f["flag"]]
    assert flags and {f["node_id"] for f in flags} == {1001}
    assert flags[0]["flag"].startswith("evaluate: pipe_clip: the bank less its")
    # Every source is listed (judged where a reporter's defects touch it); no honest
    # one was found to hide defects.
    for cat in CATS.split(","):
        verdicts = fed["banks"][cat]["source_check"]["sources"]
        assert set(verdicts) == {"0", "1", "2", "3"}
        assert all(not v["flagged"] for s, v in verdicts.items() if s != "0")


def test_the_source_check_can_leave_a_flagged_clients_rows_out(
    tiny_root: Path, tmp_path: Path
) -> None:
    """`source-check-action = exclude`: the planter's rows leave the bank, the category is
    merged again from the others and scored again, and the run's metrics are those of the
    new bank (its rows' damage undone)."""
    extra = {"robust-merge": "off", "source-check-action": "exclude"}
    run_config = config(tiny_root, tmp_path / "exclude", "exclude", 4, **extra)
    poisoner = Attacker(1001, "poison", tiny_root, categories=("pipe_clip",))
    grid = InProcessGrid(tampered_app(poisoner), nodes(4), run_config)
    outcome = serve(grid, run_config)
    fed = outcome.results["federated"]
    bank_facts = fed["banks"]["pipe_clip"]
    assert bank_facts["source_check"]["excluded"] == [0]
    assert bank_facts["clients"] == [1, 2, 3]
    assert fed["banks"]["pipe_staple"]["clients"] == [0, 1, 2, 3]  # no flag: unchanged
    kinds = [msg.metadata.message_type for msg, _ in grid.history]
    assert kinds.count(MessageType.EVALUATE) == 8  # scored twice
    planted = poisoner.planted["pipe_clip"]
    bank = Bank.load(outcome.run_dir / "model" / "banks" / "pipe_clip.npz").features
    assert len(planted) and np.linalg.norm(bank[:, None] - planted[None], axis=2).min() > 0
    assert any("were left out of the bank" in f["flag"] for f in fed["flagged"])
    # The same attack, flagged only: the planted rows stay and cost the category.
    flagged = config(tiny_root, tmp_path / "flag", "flag", 4, **{"robust-merge": "off"})
    again = Attacker(1001, "poison", tiny_root, categories=("pipe_clip",))
    grid = InProcessGrid(tampered_app(again), nodes(4), flagged)
    kept = serve(grid, flagged).results["categories"]["pipe_clip"]["auc_spro"]["0.3"]
    repaired = outcome.results["categories"]["pipe_clip"]["auc_spro"]["0.3"]
    assert repaired > kept
