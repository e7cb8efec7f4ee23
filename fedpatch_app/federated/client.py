"""What a client does with each instruction (the ClientApp's handlers call these).

train:    local PatchCore coreset per category it holds, oversampled for the merge.
evaluate: score its own test images with the global banks; keep the float maps on its
          own disk (a new process may handle the next message); reply with the map
          range and image scores.
query:    quantize the cached maps with the global per-category scaling and reply with
          the sufficient statistics of AUC-sPRO and its own local metrics.

No image or map leaves the client; only coresets, scores and statistics do.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict

from fedpatch_app.errors import FedpatchError, ModelError
from fedpatch_app.federated import faults
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.data import ClientShare, client_share

log = logging.getLogger(__name__)

_RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: Images per chunk when computing the statistics (bounds the memory of the levels).
STATS_CHUNK = 16


class ClientError(FedpatchError):
    """A client handler failed; the message names the client (partition and node)."""


def named_errors(
    handler: Callable[[Message, Context], Message],
) -> Callable[[Message, Context], Message]:
    """Prefix any failure with `partition P (node N):` so that the server, which only sees
    the error text, can name the client."""

    @functools.wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as exc:
            pid = context.node_config.get("partition-id", "?")
            log.exception("%s failed on partition %s", handler.__name__, pid)
            raise ClientError(
                f"partition {pid} (node {context.node_id}): {type(exc).__name__}: {exc}"
            ) from exc

    return wrapper


def _plan(msg: Message) -> M.Plan:
    record = msg.content.config_records.get(M.CONFIG)
    if record is None:
        raise ModelError("instruction from the server lacks its 'config' record")
    return M.Plan.from_config(record)


def _device(plan: M.Plan, node_config: Mapping[str, Any]) -> str:
    value = node_config.get("device")
    return value if isinstance(value, str) and value else plan.settings.device


def cache_dir(plan: M.Plan, context: Context) -> Path:
    """Where this node keeps its float maps between the evaluate and query messages."""
    if not _RUN_KEY.match(plan.run_key):
        raise ModelError(f"run key {plan.run_key!r} from the server is not a safe folder name")
    base = context.node_config.get("cache-dir")
    root = (
        Path(base)
        if isinstance(base, str) and base
        else Path(tempfile.gettempdir()) / "fedpatch-cache"
    )
    return root / plan.run_key / f"node-{context.node_id}"


#: The last PatchCore built in this process (backbone construction takes seconds; a
#: simulation reuses its worker processes, so the next message of the run gets it back).
_MODEL_CACHE: dict[tuple[str, str, int], Any] = {}


def _model(plan: M.Plan, spec: Any, node_config: Mapping[str, Any]) -> Any:
    from fedpatch_app.model.patchcore import PatchCore

    device = _device(plan, node_config)
    key = (spec.fingerprint(), device, plan.settings.batch_size)
    model = _MODEL_CACHE.get(key)
    if model is None:
        _MODEL_CACHE.clear()
        model = PatchCore(spec, device=device, batch_size=plan.settings.batch_size)
        _MODEL_CACHE[key] = model
    return model


def _category(share: ClientShare, name: str) -> Any:
    from fedpatch_app.data.autovi import load_category

    return load_category(share.data_root, name)


# --------------------------------------------------------------------------- train


@named_errors
def handle_train(msg: Message, context: Context) -> Message:
    start = time.perf_counter()
    plan = _plan(msg)
    spec = plan.spec
    share = client_share(plan, context.node_config)
    log.info(
        "partition %s: training on %s",
        share.partition_id,
        ", ".join(f"{c} ({len(v)} images)" for c, v in share.train.items()) or "nothing",
    )
    banks: dict[str, Any] = {}
    n_images: dict[str, int] = {}
    dp_facts: dict[str, dict[str, Any]] = {}
    public: dict[str, np.ndarray] = {}
    model = None
    for cat in sorted(share.train):
        rel = share.train[cat]
        if not rel:
            continue
        if model is None:
            model = _model(plan, spec, context.node_config)
        category = _category(share, cat)
        paths = [category.root / r for r in rel]
        faults.during_extraction(context.node_config)
        if plan.settings.dp.enabled:
            banks[cat], n_images[cat], dp_facts[cat], public[cat] = _private_release(
                model, paths, cat, plan, context.node_config
            )
            continue
        banks[cat] = model.fit(
            paths, cat, plan.settings.coreset_ratio, plan.settings.local_oversample
        )
        n_images[cat] = len(paths)
    device = str(model.device) if model is not None else ""
    content = M.encode_train_reply(
        banks,
        n_images,
        fingerprint=plan.fingerprint,
        partition_id=share.partition_id,
        # DP sums can exceed float16's range: they always travel as float32.
        transport_dtype="float32" if plan.settings.dp.enabled else plan.settings.transport_dtype,
        seconds=time.perf_counter() - start,
        device=device,
    )
    for facts in dp_facts.values():
        for key, value in facts.items():
            content.config_records[M.INFO][key] = value
    if public:
        content.array_records[M.PUBLIC] = M.public_centres_record(public)
    content = faults.corrupt_train_reply(context.node_config, content)
    return Message(content, reply_to=msg)


#: Public centres per (fingerprint, category, DP settings), kept for the process.
_CENTRES_CACHE: dict[tuple[str, str, Any], tuple[np.ndarray, float]] = {}


def _private_release(
    model: Any, paths: list[Path], cat: str, plan: M.Plan, node_config: Mapping[str, Any]
) -> tuple[Any, int, dict[str, Any], np.ndarray]:
    """DP train reply of one category (see `fedpatch_app.model.dp`): noisy per-cluster
    sums of per-image bounded contributions, around centres from public images only.

    Returns a Bank-like object (features = noisy sums, n_patches = noisy image count x
    patches per image), the noisy image count (>= 1), the reply's DP info entries and the
    public centres (float32; public, sent so the server can check and use them).
    Nothing sent depends on the private images except through the Gaussian releases.
    """
    from types import SimpleNamespace

    from fedpatch_app.model import dp
    from fedpatch_app.model.patchcore import select_coreset

    config = plan.settings.dp
    local_root = node_config.get("dp-public-root")
    if isinstance(local_root, str) and local_root:
        # The same public images, kept elsewhere on this client's machine (deployments);
        # the server's digest check catches a client whose images differ.
        config = dataclasses.replace(config, public_root=local_root)
    key = (plan.fingerprint, cat, config)
    if key not in _CENTRES_CACHE:
        _CENTRES_CACHE[key] = dp.public_centres(
            lambda p: model.features(p, desc=f"{cat}: public reference"),
            lambda x, k: select_coreset(x, k, model.spec, device=model.device)[0],
            cat,
            config,
        )
    centres, clip = _CENTRES_CACHE[key]
    feats = model.features(paths, desc=f"{cat}: train features")
    patches_per_image = int(feats.shape[1] * feats.shape[2])
    stats = dp.cluster_statistics(iter(feats), centres, clip, config.clusters_per_image)
    del feats
    release = dp.privatize(stats, config, clip)
    n_noisy = max(1, int(round(release.n_images)))
    log.info(
        "%s: DP release of %d images (epsilon %.3g, delta %.3g spent; sigma sums %.4g, "
        "counts %.4g)",
        cat,
        stats.n_images,
        release.epsilon,
        release.delta,
        release.sigmas["sums"],
        release.sigmas["counts"],
    )
    bank = SimpleNamespace(
        features=release.sums.astype(np.float32),
        n_patches=n_noisy * patches_per_image,
        radius=0.0,
    )
    facts = M.dp_info(cat, release, dp.centres_digest(centres, clip), clip)
    return bank, n_noisy, facts, centres.astype(np.float32)


# --------------------------------------------------------------------------- evaluate


@named_errors
def handle_evaluate(msg: Message, context: Context) -> Message:
    from fedpatch_app.data.autovi import CATEGORIES
    from fedpatch_app.model.patchcore import Bank

    plan = _plan(msg)
    spec = plan.spec
    arrays = msg.content.array_records.get(M.BANKS)
    if arrays is None:
        raise ModelError("evaluate instruction lacks the global banks")
    banks = M.decode_banks(arrays, int(spec.embed_dim), CATEGORIES)
    clips = M.query_clips(msg.content.config_records[M.CONFIG], list(banks))
    share = client_share(plan, context.node_config)
    cache = cache_dir(plan, context)
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True)
    model = None
    out: dict[str, M.CategoryScores] = {}
    for cat in sorted(share.test):
        if not share.test[cat]:
            continue
        if cat not in banks:
            log.warning("%s: the server sent no bank for it; its test images are not scored", cat)
            continue
        if model is None:
            model = _model(plan, spec, context.node_config)
        category = _category(share, cat)
        samples = [category.find_test(r) for r in share.test[cat]]
        bank = Bank(
            features=banks[cat],
            spec=spec,
            category=cat,
            radius=0.0,
            n_patches=len(banks[cat]),
            query_clip=clips[cat],
        )
        pred = model.predict(bank, [s.path for s in samples], category.size, desc=f"{cat}: scoring")
        width, height = category.size
        folder = cache / cat
        folder.mkdir(parents=True)
        stack = np.lib.format.open_memmap(
            folder / "maps.npy", mode="w+", dtype=np.float32, shape=(len(samples), height, width)
        )
        lo, hi = math.inf, -math.inf
        for i, m in enumerate(pred.maps):
            stack[i] = m
            lo, hi = min(lo, float(np.min(m))), max(hi, float(np.max(m)))
        stack.flush()
        del stack
        rel_paths = [s.rel_path for s in samples]
        defects = [s.defect for s in samples]
        scores = np.asarray(pred.image_scores, dtype=np.float64)
        (folder / "index.json").write_text(
            json.dumps({"rel_paths": rel_paths, "defects": defects, "scores": scores.tolist()}),
            encoding="utf-8",
        )
        out[cat] = M.CategoryScores(lo, hi, scores, defects, rel_paths)
        del pred
    content = M.encode_score_reply(out, fingerprint=plan.fingerprint)
    return Message(content, reply_to=msg)


# --------------------------------------------------------------------------- query


def local_metrics(cat: str, stats: Any, scores: np.ndarray, defects: list[str]) -> dict[str, float]:
    """A client's own metrics on its own test images (empty where undefined)."""
    from fedpatch_app.errors import DataError
    from fedpatch_app.evaluation.metrics import auc_spro_from_statistics, image_auroc

    out: dict[str, float] = {}
    if stats.n_regions > 0:
        try:
            spro = auc_spro_from_statistics(stats)
            for key, value in spro.auc.items():
                if value is not None and math.isfinite(float(value)):
                    out[f"{cat}.auc_spro.{key}"] = float(value)
        except (DataError, ModelError) as exc:
            log.info("%s: no local AUC-sPRO (%s)", cat, exc)
    try:
        auroc = image_auroc(scores, defects)
        out[f"{cat}.image_auroc"] = float(auroc["mean"])
    except (DataError, ModelError) as exc:
        log.info("%s: no local image AUROC (%s)", cat, exc)
    return out


@named_errors
def handle_query(msg: Message, context: Context) -> Message:
    from fedpatch_app.data.autovi import CATEGORIES
    from fedpatch_app.evaluation.export import MapScaling, write_category_maps
    from fedpatch_app.evaluation.metrics import level_edges, spro_statistics

    plan = _plan(msg)
    record = msg.content.config_records[M.CONFIG]
    scalings = M.read_scalings(record, CATEGORIES)
    share = client_share(plan, context.node_config)
    cache = cache_dir(plan, context)
    cached = (
        sorted(p.name for p in cache.iterdir() if (p / "index.json").is_file())
        if cache.is_dir()
        else []
    )
    stats_out: dict[str, dict[str, np.ndarray]] = {}
    metrics: dict[str, float] = {}
    edges = level_edges()
    for cat in cached:
        if cat not in scalings:
            raise ModelError(f"{cat}: scored here, but the server sent no scaling for it")
        index = json.loads((cache / cat / "index.json").read_text(encoding="utf-8"))
        maps = np.load(cache / cat / "maps.npy", mmap_mode="r", allow_pickle=False)
        category = _category(share, cat)
        samples = [category.find_test(r) for r in index["rel_paths"]]
        if maps.shape[0] != len(samples):
            raise ModelError(f"{cat}: cached maps do not match the cached index ({cache})")
        scaling = MapScaling(*scalings[cat])
        stats = None
        for begin in range(0, len(samples), STATS_CHUNK):
            chunk = range(begin, min(begin + STATS_CHUNK, len(samples)))
            levels = [scaling.to_uint16(np.asarray(maps[i])) for i in chunk]
            regions = [category.load_regions(samples[i]) for i in chunk]
            part = spro_statistics(levels, regions, edges)
            stats = part if stats is None else stats.merge(part)
        assert stats is not None
        stats_out[cat] = stats.to_arrays()
        quantized = scaling.to_uint16(np.asarray(index["scores"], dtype=np.float64)).astype(
            np.float64
        )
        metrics.update(local_metrics(cat, stats, quantized, list(index["defects"])))
        if plan.settings.write_maps:
            maps_dir = context.node_config.get("maps-dir") or plan.maps_dir
            if maps_dir:
                write_category_maps(
                    Path(str(maps_dir)), category, samples, [np.asarray(m) for m in maps], scaling
                )
        del maps
    if cache.is_dir():
        shutil.rmtree(cache, ignore_errors=True)
    content: RecordDict = M.encode_stats_reply(stats_out, metrics, fingerprint=plan.fingerprint)
    return Message(content, reply_to=msg)
