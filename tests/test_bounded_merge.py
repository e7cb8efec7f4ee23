"""The server keeps the clients' coresets on disk (`model.row_store`) and merges one
category at a time: the banks are the same bytes as with everything in memory, and while
the second category is merged the first one's coresets are not held in memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Message, MessageType, RecordDict

from fedpatch_app.federated import messages as M
from fedpatch_app.federated.data import resolve_dataset
from fedpatch_app.federated.inprocess import set_task_identity
from fedpatch_app.federated.protocol import merge_rule as rule_module
from fedpatch_app.federated.protocol.accept import Expected
from fedpatch_app.federated.protocol.federation import Federation
from fedpatch_app.federated.protocol.merge_rule import RobustKCenter
from fedpatch_app.federated.protocol.results import TrainAnswers
from fedpatch_app.federated.protocol.server import make_plan
from fedpatch_app.federated.registry import ClientRegistry
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.model.row_store import RowStore, gather, is_mapped, release
from fedpatch_app.settings import from_run_config

CATS = ("pipe_clip", "tank_screw")
CLIENTS = 3
ROWS = 400  # per client and category: 1.6 MB of float32 rows at width 1024
#: numpy's array data in Python's allocation tracing (not the memory maps).
NUMPY = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedpatch_app.data.synthetic import generate

    root = tmp_path_factory.mktemp("two_cats")
    generate(root, scale="tiny", seed=0, categories=list(CATS), kind="drawn")
    return root


def _federation(root: Path, out: Path, store: RowStore | None) -> Federation:
    settings = from_run_config(
        {
            "dataset": "autovi",
            "data-root": str(root),
            "categories": ",".join(CATS),
            "weights": "none",
            "image-size": 64,
            "device": "cpu",
            "min-clients": CLIENTS,
            "wait-timeout": 0,
        }
    )
    spec = FeatureSpec(weights="none", image_size=64)
    plan = make_plan(settings, resolve_dataset(settings), spec, "k", out)
    registry = ClientRegistry(settings.min_clients, settings.round_timeout)
    registry.register(range(1, CLIENTS + 1))
    rule = RobustKCenter(settings, spec, registry)
    return Federation(plan, rule, registry, store=store)


class _Part:
    def __init__(self, features: np.ndarray, n_patches: int) -> None:
        self.features, self.n_patches, self.radius = features, n_patches, 1.0


def _answers(fed: Federation) -> TrainAnswers:
    """Every client's train reply (whole categories, partition -1), as from the grid."""
    limits = fed.limits
    set_task_identity()
    answered = []
    for node in range(1, CLIENTS + 1):
        rng = np.random.default_rng(node)
        parts, images = {}, {}
        for c, cat in enumerate(CATS):
            rows = rng.normal(c, 1.0, (ROWS, limits.embed_dim)).astype(np.float32)
            images[cat] = 40
            parts[cat] = _Part(rows, images[cat] * limits.patches_per_image(cat, None))
        content = M.encode_train_reply(
            parts, images, fingerprint=fed.plan.fingerprint, partition_id=-1
        )
        sent = Message(RecordDict(), node, MessageType.TRAIN, group_id="1")
        answered.append((fed.registry.clients[node], Message(content, reply_to=sent)))
    return TrainAnswers(answered, Expected())


def test_row_store_reads_back_the_bytes_it_wrote(tmp_path: Path) -> None:
    store = RowStore(tmp_path)
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 8)).astype(np.float32) for n in (5, 0, 9000, 3)]
    mapped = [store.put("p", p) for p in parts]
    assert all(is_mapped(m) for m in mapped if len(m)) and not is_mapped(parts[0])
    assert all(np.array_equal(a, b) for a, b in zip(parts, mapped, strict=True))
    union = store.union("u", mapped)
    assert is_mapped(union)
    assert union.tobytes() == np.concatenate(parts).tobytes()
    release(union, *mapped)  # pages dropped: the values read again from the file
    picks = rng.permutation(len(union))[:7000]
    assert gather(union, picks).tobytes() == np.concatenate(parts)[picks].tobytes()
    store.close()
    assert not store.folder.exists()


def test_the_banks_are_the_same_bytes_with_the_coresets_on_disk(
    data_root: Path, tmp_path: Path
) -> None:
    banks = {}
    for on_disk in (False, True):
        store = RowStore(tmp_path) if on_disk else None
        fed = _federation(data_root, tmp_path, store)
        trained = fed.accept(_answers(fed))
        features = [p.features for r in trained.replies.values() for p in r.coresets.values()]
        assert all(is_mapped(f) for f in features) == on_disk
        merged = fed.merge(trained)
        banks[on_disk] = {c: m.bank.features.tobytes() for c, m in merged.categories.items()}
        sources = {c: m.row_sources.tolist() for c, m in merged.categories.items()}
        banks[on_disk]["sources"] = repr(sources)
    assert banks[True] == banks[False]
    assert set(banks[True]) == {*CATS, "sources"}


def test_the_second_category_is_merged_without_the_first_ones_coresets_in_memory(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy's array data in memory (not the memory maps) when the second
    category's merge starts: before, every client's coresets of every category were held
    decoded (and their screened copies) all through the merge."""
    fed = _federation(data_root, tmp_path, RowStore(tmp_path))
    answers = _answers(fed)
    one_category = CLIENTS * ROWS * fed.limits.embed_dim * 4
    held: list[int] = []
    merge_category = rule_module.merge_category

    def probe(*args: Any, **kwargs: Any):
        arrays = tracemalloc.take_snapshot().filter_traces([NUMPY])
        held.append(sum(t.size for t in arrays.traces))
        return merge_category(*args, **kwargs)

    monkeypatch.setattr(rule_module, "merge_category", probe)
    tracemalloc.start()
    try:
        merged = fed.merge(fed.accept(answers))
    finally:
        tracemalloc.stop()
    assert len(held) == 2
    # The first category's bank is held then (in memory until the merge returns); its
    # coresets, and the second category's, are not (with them in memory: 13 MB here).
    first_bank = merged.categories[CATS[0]].bank.size * fed.limits.embed_dim * 4
    assert held[1] < first_bank + 0.25 * one_category, (held, first_bank, one_category)
