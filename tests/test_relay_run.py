"""`share-mode = relay` in a federated run: the server relays sealed coresets and never
holds a row; every client merges, scores and writes the model folder.

One raw and one relay run of the same tiny case, in process (the real ServerApp and
ClientApp code): the relay run's banks, in every client's model folder, are the raw run's
banks bit for bit, its metrics, scalings and thresholds the same; no float32 row of any
client's coreset, nor of any bank, is in a message the server sends or receives. A node
without the share key, or with another one, is refused by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

import client_app
from fedpatch_app.errors import ConfigError
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.inprocess import InProcessGrid
from fedpatch_app.federated.protocol.server import run_server
from fedpatch_app.inspection.model_folder import load_model
from fedpatch_app.privacy.keys import write_key
from fedpatch_app.settings import from_run_config

CATS = ("pipe_clip", "pipe_staple")
N = 3


def _config(root: Path, mode: str) -> dict[str, Any]:
    return {
        "weights": "none",
        "image-size": 64,
        "device": "cpu",
        "categories": ",".join(CATS),
        "dataset": "autovi",
        "data-root": str(root),
        "wait-timeout": 0,
        "out-dir": str(root.parent / "runs"),
        "run-name": mode,
        "partition": "iid",
        "num-clients": N,
        "min-clients": N,
        "source-check": False,
        "share-mode": mode,
    }


def _run(run_config: dict[str, Any], nodes: list[dict[str, Any]]) -> tuple[Any, InProcessGrid]:
    grid = InProcessGrid(client_app.app, nodes, run_config)
    context = Context(
        run_id=7, node_id=1, node_config={}, state=RecordDict(), run_config=run_config
    )
    return run_server(grid, context), grid


@pytest.fixture(scope="module")
def runs(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("relay_run")
    key = write_key(base / "share.key")
    nodes = [
        {
            "partition-id": i,
            "num-partitions": N,
            "share-key": key.source,
            "model-dir": str(base / f"node{i}"),
            "cache-dir": str(base / "cache"),
        }
        for i in range(N)
    ]
    raw, raw_grid = _run(_config(tiny_root, "raw") | {"out-dir": str(base / "runs")}, nodes)
    relay, relay_grid = _run(_config(tiny_root, "relay") | {"out-dir": str(base / "runs")}, nodes)
    return {
        "base": base,
        "key": key,
        "nodes": nodes,
        "raw": raw,
        "raw_grid": raw_grid,
        "relay": relay,
        "relay_grid": relay_grid,
    }


def test_relay_banks_and_metrics_are_the_raw_runs(runs: dict[str, Any]) -> None:
    raw = load_model(runs["raw"].run_dir / "model")
    assert not (runs["relay"].run_dir / "model").exists()  # the server holds no bank
    digests = runs["relay"].results["federated"]["banks"]
    for i in range(N):
        mine = load_model(runs["base"] / f"node{i}" / "relay-7")  # complete: no flag needed
        assert sorted(mine.categories) == sorted(raw.categories) == sorted(CATS)
        for cat, entry in raw.categories.items():
            got = mine.categories[cat]
            assert got.bank.features.dtype == entry.bank.features.dtype == np.float32
            assert got.bank.features.tobytes() == entry.bank.features.tobytes()
            assert got.bank.radius == entry.bank.radius
            assert got.scaling == entry.scaling
            assert got.thresholds == entry.thresholds
            assert got.train_images == entry.train_images
            assert len(digests[cat]["digest"]) == 64
    assert runs["relay"].results["categories"] == runs["raw"].results["categories"]
    assert runs["relay"].results["mean"] == runs["raw"].results["mean"]
    assert runs["relay"].results["run"]["outputs"]["model"] is None


def _blob(grid: InProcessGrid) -> bytes:
    """Every byte of every message the server sent or received."""
    parts: list[bytes] = []
    for pair in grid.history:
        for msg in pair:
            if not msg.has_content():
                continue
            for record in msg.content.values():
                for value in record.values():
                    if isinstance(value, Array):
                        parts.append(value.data)
                    elif isinstance(value, str | bytes):
                        parts.append(value.encode() if isinstance(value, str) else value)
                    elif isinstance(value, list):
                        parts.append(np.asarray(value).tobytes())
    return b"\x00".join(parts)


def _client_rows(grid: InProcessGrid) -> list[bytes]:
    """The float32 rows of every coreset the raw run's clients sent."""
    rows = []
    for _, reply in grid.history:
        if reply.has_content() and M.CORESETS in reply.content.array_records:
            for arr in reply.content.array_records[M.CORESETS].values():
                rows += [r.tobytes() for r in arr.numpy().astype(np.float32)]
    return rows


def test_the_server_handles_no_row_in_clear(runs: dict[str, Any]) -> None:
    rows = _client_rows(runs["raw_grid"])
    banks = load_model(runs["raw"].run_dir / "model")
    rows += [r.tobytes() for e in banks.categories.values() for r in e.bank.features]
    assert len(rows) > 100
    raw_blob = _blob(runs["raw_grid"])
    assert all(r in raw_blob for r in rows)  # the check finds rows sent in clear
    relay_blob = _blob(runs["relay_grid"])
    assert not [r for r in rows if r in relay_blob]
    # Nor does the server write any: no bank file in its run folder.
    assert not list(runs["relay"].run_dir.rglob("banks"))


def _instruction(grid: InProcessGrid, kind: str) -> Message:
    return next(m for m, _ in grid.history if m.metadata.message_type == kind)


def _deliver(msg: Message, node_config: dict[str, Any]) -> Message:
    context = Context(
        run_id=7, node_id=1001, node_config=node_config, state=RecordDict(), run_config={}
    )
    return client_app.app(msg, context)


def test_a_node_without_the_share_key_is_refused_by_name(runs: dict[str, Any]) -> None:
    node = {k: v for k, v in runs["nodes"][0].items() if k != "share-key"}
    reply = _deliver(_instruction(runs["relay_grid"], "train"), node)
    assert reply.has_error()
    assert "node config 'share-key'" in reply.error.reason
    assert "partition 0" in reply.error.reason


def test_a_node_with_another_key_cannot_open_the_rows(runs: dict[str, Any]) -> None:
    other = write_key(runs["base"] / "other.key")
    node = {**runs["nodes"][0], "share-key": other.source}
    reply = _deliver(_instruction(runs["relay_grid"], "evaluate"), node)
    assert reply.has_error()
    reason = reply.error.reason
    assert "node config 'share-key'" in reason
    assert runs["key"].key_id in reason and other.key_id in reason


def test_the_server_drops_a_client_sealing_with_another_key(runs: dict[str, Any]) -> None:
    """Two clients of three seal with the federation's key: the third is dropped, named."""
    from fedpatch_app.federated.protocol.relay import agree_key
    from fedpatch_app.federated.registry import ClientRegistry

    trained = runs["relay"].federation.trained
    registry = ClientRegistry(2, 1.0)
    registry.register(trained.replies)
    replies = dict(trained.replies)
    odd = next(iter(replies))
    replies[odd] = M.TrainReply(**{**replies[odd].__dict__, "key_id": "0" * 16})
    state = type(trained)(replies, trained.plan, trained.expected)
    assert agree_key(registry, state) == runs["key"].key_id
    dropped = registry.dropped()
    assert [d["node_id"] for d in dropped] == [odd]
    assert "0" * 16 in dropped[0]["reason"] and "share-key" in dropped[0]["reason"]


def test_defences_that_need_rows_on_the_server_are_refused_by_name() -> None:
    for key, value in (("source-check", True), ("dp-epsilon", 1.0), ("init-model", "m")):
        config = {"share-mode": "relay", "source-check": False, key: value}
        with pytest.raises(ConfigError, match=key):
            from_run_config(config)
    assert from_run_config({"share-mode": "relay", "source-check": False}).share_mode == "relay"


def test_the_server_checks_the_ciphertexts_sizes(runs: dict[str, Any]) -> None:
    """A sealed coreset shorter than its declared rows is refused before anything else."""
    from fedpatch_app.federated.codec_relay import SEALED

    train = _instruction(runs["relay_grid"], "train")
    reply = next(r for m, r in runs["relay_grid"].history if m is train)
    limits = M.TrainLimits.of(M.Plan.from_config(train.content.config_records[M.CONFIG]))
    assert M.decode_train_reply(reply.content, limits).key_id == runs["key"].key_id
    sealed = {k: v.numpy() for k, v in reply.content.array_records[SEALED].items()}
    cat = next(iter(sealed))
    sealed[cat] = sealed[cat][:-4].copy()  # one ciphertext cut short
    content = RecordDict(
        {
            M.INFO: reply.content.config_records[M.INFO],
            SEALED: ArrayRecord({k: Array(v) for k, v in sealed.items()}),
        }
    )
    with pytest.raises(M.InvalidReply, match="bytes"):
        M.decode_train_reply(content, limits)


def test_relayed_rows_open_under_the_partition_their_sender_named() -> None:
    """A node holding whole categories seals as partition -1 while node-identities binds
    it to a partition: the rows are relayed with both and open; relayed as another
    sender's, they fail their authentication."""
    from fedpatch_app.federated.codec_relay import (
        RELAY,
        RelayedPart,
        open_part,
        read_relayed,
        relay_record,
        sender,
    )
    from fedpatch_app.privacy import relay
    from fedpatch_app.privacy.keys import ShareKey

    key = ShareKey.generate()
    rows = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    box = relay.seal(rows, key, sender(-1), "pipe_clip")
    part = RelayedPart(1001, 3, 20, 2, 1.5, 5, box.nonce + box.ciphertext, -1)
    arrays, config = relay_record({"pipe_clip": [part]})
    content = RecordDict({RELAY: arrays, M.CONFIG: ConfigRecord(config)})
    (got,) = read_relayed(content, ["pipe_clip"], 8)["pipe_clip"]
    assert got == part
    assert open_part(got, "pipe_clip", 8, key, key.key_id).tobytes() == rows.tobytes()
    forged = RelayedPart(*[*part.__dict__.values()][:-1], 2)
    with pytest.raises(ConfigError, match="authentication"):
        open_part(forged, "pipe_clip", 8, key, key.key_id)
