"""The drills package: the fault mod, the drill ClientApp, the drill app folder, and the
tamper mod of the in-process tests (fast; the deployed drill is in test_deployment.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

import client_app
from fedpatch_app.errors import ConfigError
from fedpatch_app.federated.inprocess import set_task_identity
from fedpatch_drills import client_app as drills
from fedpatch_drills import faults
from fedpatch_drills.drill_app import DRILL_CLIENTAPP, PRODUCT_CLIENTAPP, write_drill_app

REPO = Path(__file__).resolve().parents[1]


def _content() -> RecordDict:
    good = np.ones((4, 1024), dtype=np.float32)
    return RecordDict(
        {
            "coresets": ArrayRecord({"a": Array(good), "b": Array(good)}),
            "info": ConfigRecord({"x": 1}),
        }
    )


def _instruction(kind: str) -> Message:
    set_task_identity()
    return Message(RecordDict(), dst_node_id=1001, message_type=kind)


def _context(**node_config: str) -> Context:
    return Context(
        run_id=1, node_id=1001, node_config=node_config, state=RecordDict(), run_config={}
    )


def _handler(calls: list[str]):
    def handle(msg: Message, context: Context) -> Message:
        calls.append(msg.metadata.message_type)
        return Message(_content(), reply_to=msg)

    return handle


def test_unknown_fault_name_is_a_config_error() -> None:
    assert faults.fault_of({}) == ""
    assert faults.fault_of({"fault": "malformed-coreset"}) == "malformed-coreset"
    with pytest.raises(ConfigError, match="node config 'fault'"):
        faults.fault_of({"fault": "explode"})
    with pytest.raises(ConfigError, match="fault"):
        faults.fault_mod(_instruction(MessageType.TRAIN), _context(fault="explode"), _handler([]))


def test_malformed_coreset_changes_only_the_first_array() -> None:
    bad = faults.corrupt_train_reply(_content())
    assert tuple(bad["coresets"]["a"].shape) == (3, 7)
    assert tuple(bad["coresets"]["b"].shape) == (4, 1024)
    assert np.isnan(bad["coresets"]["a"].numpy()).any()


def test_the_fault_mod_changes_only_the_train_reply_of_a_faulty_node() -> None:
    calls: list[str] = []
    train, evaluate = _instruction(MessageType.TRAIN), _instruction(MessageType.EVALUATE)
    faulty = _context(fault="malformed-coreset")
    reply = faults.fault_mod(train, faulty, _handler(calls))
    assert tuple(reply.content["coresets"]["a"].shape) == (3, 7)
    reply = faults.fault_mod(evaluate, faulty, _handler(calls))
    assert tuple(reply.content["coresets"]["a"].shape) == (4, 1024)
    reply = faults.fault_mod(train, _context(), _handler(calls))
    assert tuple(reply.content["coresets"]["a"].shape) == (4, 1024)
    assert calls == [MessageType.TRAIN, MessageType.EVALUATE, MessageType.TRAIN]


_CRASH = """
from flwr.app import Context, Message, MessageType, RecordDict
from fedpatch_app.federated.inprocess import set_task_identity
from fedpatch_drills import faults
set_task_identity()
ctx = Context(run_id=1, node_id=1001, node_config={"fault": "crash-on-train"},
              state=RecordDict(), run_config={})
def handle(m, c):
    print("handled", m.metadata.message_type, flush=True)
    return Message(RecordDict(), reply_to=m)
for kind in (MessageType.QUERY, MessageType.TRAIN):
    faults.fault_mod(Message(RecordDict(), dst_node_id=1001, message_type=kind), ctx, handle)
print("still alive")
"""


def test_crash_on_train_kills_the_process_before_the_handler_runs() -> None:
    """The node's other instructions are handled; the train one ends the process with
    SIGKILL before its handler runs (nothing after it runs)."""
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.splitlines() == ["handled query"]


def test_the_drill_client_app_has_the_product_handlers() -> None:
    """The drill ClientApp handles what the product's handles, with the same functions."""
    product = client_app.app._registered_funcs  # noqa: SLF001 - Flower keeps no public list
    assert set(drills.app._registered_funcs) == set(product)  # noqa: SLF001
    calls: list[str] = []

    def watch(msg: Message, context: Context, call_next) -> Message:
        calls.append(msg.metadata.message_type)
        return Message(RecordDict(), reply_to=msg)

    app = drills.with_mods(watch)
    for kind in (MessageType.TRAIN, MessageType.EVALUATE, MessageType.QUERY):
        app(_instruction(kind), _context())
    assert calls == [MessageType.TRAIN, MessageType.EVALUATE, MessageType.QUERY]


def test_tampered_app_hands_each_reply_and_the_node_to_the_tamper() -> None:
    seen: list[tuple[int, str]] = []

    def tamper(node_id: int, msg: Message, reply: Message) -> Message:
        seen.append((node_id, msg.metadata.message_type))
        return Message(_content(), reply_to=msg)

    mod = drills.tamper_mod(tamper)
    reply = mod(_instruction(MessageType.QUERY), _context(), lambda m, c: m)
    assert seen == [(1001, MessageType.QUERY)]
    assert "coresets" in reply.content


def test_the_drill_app_is_the_project_with_the_drill_client_app(tmp_path: Path) -> None:
    out = write_drill_app(tmp_path / "drill")
    product = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    drill = (out / "pyproject.toml").read_text(encoding="utf-8")
    assert drill == product.replace(PRODUCT_CLIENTAPP, DRILL_CLIENTAPP) != product
    for name in ("server_app.py", "client_app.py", "fedpatch_drills/faults.py"):
        assert (out / name).read_bytes() == (REPO / name).read_bytes(), name
    assert (out / "fedpatch_app" / "federated" / "client.py").is_file()
    assert (out / "conf" / "partitions" / "iid.yaml").is_file()
    assert not list(out.rglob("__pycache__"))
    # Written again, it replaces the folder.
    (out / "stale.py").write_text("", encoding="utf-8")
    write_drill_app(out)
    assert not (out / "stale.py").exists()
