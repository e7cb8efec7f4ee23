"""The merge rule is a plug-in: the protocol runs with any object that has `merge`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, RecordDict

import client_app
from fedpatch_app.federated.inprocess import InProcessGrid
from fedpatch_app.federated.protocol.merge_rule import MergeRule
from fedpatch_app.federated.protocol.results import BankInfo, CategoryMerge, Holders
from fedpatch_app.federated.protocol.server import run_server
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.patchcore import Bank


class UnionRule:
    """Every accepted row enters the bank: no screening, no reduction."""

    def __init__(self, settings: Any, spec: FeatureSpec, registry: Any, *_: Any) -> None:
        self.spec = spec
        self.registry = registry
        self.calls: list[tuple[str, ...]] = []

    def merge(
        self,
        held: Mapping[str, Holders],
        *,
        screen: bool = True,
        only: Collection[str] | None = None,
    ) -> dict[str, CategoryMerge]:
        self.calls.append(tuple(held))
        out = {}
        for cat, holders in held.items():
            if not holders or (only is not None and cat not in only):
                continue
            rows = np.concatenate([p.features for _, p in holders])
            patches = sum(p.n_patches for _, p in holders)
            # Each local coreset covers its patches within its radius: so does the union.
            radius = max(p.radius for _, p in holders)
            bank = Bank(rows, self.spec, cat, radius, patches)
            clients = [self.registry.clients[n].partition_id for n, _ in holders]
            info = BankInfo(
                bank.size, radius, patches, sum(p.n_images for _, p in holders), clients
            )
            out[cat] = CategoryMerge(bank, info, list(holders))
        return out


def test_a_different_merge_rule_plugs_in_without_changing_the_protocol(
    tiny_root: Path, tmp_path: Path
) -> None:
    run_config = {
        "dataset": "autovi",
        "data-root": str(tiny_root),
        "categories": "pipe_clip",
        "partition": "iid",
        "num-clients": 2,
        "min-clients": 2,
        "weights": "none",
        "image-size": 64,
        "device": "cpu",
        "calibration-fraction": 0.0,
        "out-dir": str(tmp_path),
        "run-name": "union",
        "wait-timeout": 0,
    }
    nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    grid = InProcessGrid(client_app.app, nodes, run_config)
    context = Context(
        run_id=5, node_id=1, node_config={}, state=RecordDict(), run_config=run_config
    )
    rules: list[UnionRule] = []

    def make(*args: Any) -> MergeRule:
        rules.append(UnionRule(*args))
        return rules[-1]

    outcome = run_server(grid, context, merge_rule=make)
    assert len(rules) == 1 and rules[0].calls == [("pipe_clip",)]
    fed = outcome.results["federated"]
    sent = sum(c["coreset_rows"]["pipe_clip"] for c in fed["clients"])
    # The bank is the union: every row the clients sent, none screened, none reduced.
    assert fed["banks"]["pipe_clip"]["size"] == sent
    assert fed["banks"]["pipe_clip"]["clients"] == [0, 1]
    assert fed["banks"]["pipe_clip"]["support"] is None
    assert Bank.load(outcome.run_dir / "model" / "banks" / "pipe_clip.npz").size == sent
    block = outcome.results["categories"]["pipe_clip"]
    assert block["image_auroc"]["mean"] is not None
    assert outcome.federation.merged.categories["pipe_clip"].bank.size == sent


def test_bank_facts_keep_the_results_json_form() -> None:
    """`BankInfo.to_dict` is results.json's `federated.banks.<cat>`: its keys, in order."""
    facts = {
        "size": 3,
        "target_size": 3,
        "covering_radius": 0.5,
        "union_rows": 9,
        "total_patches": 90,
        "train_images": 4,
        "local_radius_max": 0.7,
        "parent_rows": 0,
        "merge_seconds": 0.01,
    }
    info = BankInfo.of_merge(facts, [0, 2])
    info.support = {"checked": False}
    assert info.to_dict() == {**facts, "clients": [0, 2], "support": {"checked": False}}
    assert list(info.to_dict()) == [*facts, "clients", "support"]
    info.budget, info.source_check = "equal", {"threshold": 0.1}
    assert list(info.to_dict())[-2:] == ["budget", "source_check"]
    info.dp = {"groups": 1}
    assert list(info.to_dict()).index("dp") == len(facts)
    kept = BankInfo(5, 0.25, 50, 7, [], inherited=True)
    assert kept.to_dict() == {
        "size": 5,
        "covering_radius": 0.25,
        "total_patches": 50,
        "train_images": 7,
        "inherited": True,
        "clients": [],
    }


def test_only_the_link_talks_to_the_grid() -> None:
    """Of the server-side modules, only `protocol/link.py` calls the Grid's methods."""
    import re

    import fedpatch_app.federated.protocol as protocol

    calls = re.compile(r"\.(send_and_receive|push_messages|pull_messages|get_node_ids|get_nodes)\(")
    folder = Path(protocol.__file__).parent
    talking = sorted(p.name for p in folder.glob("*.py") if calls.search(p.read_text()))
    assert talking == ["link.py"]
