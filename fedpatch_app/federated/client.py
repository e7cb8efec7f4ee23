"""What a client does with each instruction (the ClientApp's handlers call these).

train:    local PatchCore coreset per category it holds (its training images minus the
          ones held out for calibration; all of them with calibration-folds, when it
          keeps the coreset it sent: `client_crossfit`), oversampled for the merge.
evaluate: score its own test and calibration images with the global banks (cross-fitted:
          each fold with the global bank less its own rows, `client_crossfit`); keep the float
          maps on its own disk (a new process may handle the next message); reply with
          the map ranges and the test images' scores.
query:    quantize the cached maps with the global per-category scaling and reply with
          the sufficient statistics of AUC-sPRO, the calibration histograms and its own
          local metrics.

No image or map leaves the client; only coresets, scores, statistics and histograms do.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict

from fedpatch_app.defences.source_check import (
    Report,
    SourceDistances,
    bank_sources,
    defect_patch_mask,
    report,
)
from fedpatch_app.errors import DataError, FedpatchError, ModelError
from fedpatch_app.federated import client_crossfit as crossfit
from fedpatch_app.federated import messages as M
from fedpatch_app.federated.client_dp import private_release
from fedpatch_app.federated.client_relay import PHASE_MODEL, handle_model, relay_banks
from fedpatch_app.federated.codec_relay import RELAY_BANKS, node_share_key, seal_reply
from fedpatch_app.federated.codec_source_check import add_reports, decode_sources
from fedpatch_app.federated.data import NodeData, node_data
from fedpatch_app.federated.map_cache import MapCache
from fedpatch_app.federated.plan import known_names
from fedpatch_app.metrics.map_scaling import MapScaling
from fedpatch_app.model.ann_index import search_params
from fedpatch_app.model.memory_bank import MemoryBank, bank_index
from fedpatch_app.model.patchcore import Bank, PatchCore
from fedpatch_app.settings import RunSettings

log = logging.getLogger(__name__)

_RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: Images per chunk when computing the statistics (bounds the memory of the levels).
STATS_CHUNK = 16


#: Flower's error code for "ClientApp raised an exception" (flwr.common.constant.ErrorCode).
CLIENT_APP_RAISED_EXCEPTION = 2


def named_errors(
    handler: Callable[[Message, Context], Message],
) -> Callable[[Message, Context], Message]:
    """Turn any failure into ONE error reply whose text starts with `partition P (node N):`,
    so that the server, which only sees the error text, names the client. An expected
    failure (bad data, settings or instruction: a FedpatchError) is logged as one line; an
    unexpected one with its traceback, for the client's own log."""

    @functools.wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
            pid = context.node_config.get("partition-id", "?")
            if isinstance(exc, FedpatchError):
                log.error("%s failed on partition %s: %s", handler.__name__, pid, exc)
            else:
                log.exception("%s failed on partition %s", handler.__name__, pid)
            reason = f"partition {pid} (node {context.node_id}): {type(exc).__name__}: {exc}"
            return Message(Error(CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)

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
_MODEL_CACHE: dict[tuple[str, str, int], PatchCore] = {}


def _model(plan: M.Plan, node_config: Mapping[str, Any]) -> PatchCore:
    device = _device(plan, node_config)
    key = (plan.fingerprint, device, plan.settings.batch_size)
    model = _MODEL_CACHE.get(key)
    if model is None:
        _MODEL_CACHE.clear()
        model = PatchCore(plan.spec, device=device, batch_size=plan.settings.batch_size)
        _MODEL_CACHE[key] = model
    model.search = search_params(plan.settings)  # this run's, whatever the cached one had
    return model


def _category(node: NodeData, name: str) -> Any:
    return node.category(name)


def _spent(model: PatchCore | None, before: Mapping[str, float], phases: tuple[str, ...]):
    """Seconds the model spent per phase since `before` (its `seconds` then)."""
    if model is None:
        return {}
    return {p: round(model.seconds.get(p, 0.0) - before.get(p, 0.0), 3) for p in phases}


# --------------------------------------------------------------------------- train


@named_errors
def handle_train(msg: Message, context: Context) -> Message:
    start = time.perf_counter()
    plan = _plan(msg)
    relayed = plan.settings.share_mode == "relay"
    share_key = node_share_key(context.node_config) if relayed else None  # before any work
    node = node_data(plan, context.node_config)
    log.info(
        "partition %s: training on %s (held out for calibration: %s)",
        node.partition_id,
        ", ".join(f"{c} ({len(v)} images)" for c, v in node.fit.items()) or "nothing",
        sum(len(v) for v in node.calibration.values()),
    )
    banks: dict[str, Any] = {}
    n_images: dict[str, int] = {}
    dp_facts: dict[str, Any] = {}
    public: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, int]] = {}
    model = None
    before = dict(_model(plan, context.node_config).seconds) if node.fit else {}
    for cat in sorted(node.fit):
        model = _model(plan, context.node_config)
        category = _category(node, cat)
        paths = [category.root / r for r in node.fit[cat]]
        if plan.settings.dp.enabled:
            banks[cat], n_images[cat], dp_facts[cat], public[cat] = private_release(
                model, paths, cat, plan, context.node_config
            )
            continue
        s = plan.settings
        banks[cat] = model.fit(paths, cat, s.coreset_ratio, s.local_oversample, category.size)
        n_images[cat] = len(paths)
        sizes[cat] = category.size
    if plan.settings.calibration_folds >= 2:  # the rows it must not be calibrated against
        crossfit.keep_sent(cache_dir(plan, context), banks, plan.settings.transport_dtype)
    content = M.encode_train_reply(
        banks,
        n_images,
        fingerprint=plan.fingerprint,
        partition_id=node.partition_id,
        # DP sums can exceed float16's range: they always travel as float32.
        transport_dtype="float32" if plan.settings.dp.enabled else plan.settings.transport_dtype,
        seconds=time.perf_counter() - start,
        device=str(model.device) if model is not None else "",
        timings=_spent(model, before, ("extraction", "coreset")),
        sizes=sizes,
    )
    for facts in dp_facts.values():
        for name, value in facts.items():
            content.config_records[M.INFO][name] = value
    if public:
        content.array_records[M.PUBLIC] = M.public_centres_record(public)
    if share_key is not None:
        seal_reply(content, share_key, node.partition_id)
    return Message(content, reply_to=msg)


# --------------------------------------------------------------------------- evaluate


def _banks(msg: Message, plan: M.Plan) -> dict[str, Bank]:
    arrays = msg.content.array_records.get(M.BANKS)
    if arrays is None:
        raise ModelError("evaluate instruction lacks the global banks")
    features = M.decode_banks(arrays, int(plan.spec.embed_dim), known_names(plan))
    clips = M.query_clips(msg.content.config_records[M.CONFIG], list(features))
    return {
        cat: Bank(f, plan.spec, cat, radius=0.0, n_patches=len(f), query_clip=clips[cat])
        for cat, f in features.items()
    }


def _score_test(
    model: PatchCore,
    bank: Bank,
    index: MemoryBank,
    category: Any,
    rel: list[str],
    cache: MapCache,
    check: SourceDistances | None = None,
):
    samples = [category.find_test(r) for r in rel]
    paths = [s.path for s in samples]
    pred = model.predict(bank, paths, category.size, f"{bank.category}: scoring", index, check)
    scores = np.asarray(pred.image_scores, dtype=np.float64)
    index = {
        "rel_paths": [s.rel_path for s in samples],
        "defects": [s.defect for s in samples],
        "scores": scores.tolist(),
    }
    lo, hi = cache.put(bank.category, "test", pred.maps, index)
    return M.CategoryScores(lo, hi, scores, index["defects"], index["rel_paths"])


def _score_calibration(
    model: PatchCore,
    bank: Bank,
    index: MemoryBank,
    category: Any,
    rel: list[str],
    cache: MapCache,
    check: SourceDistances | None = None,
) -> M.CalibrationRange:
    paths = [category.root / r for r in rel]
    desc = f"{bank.category}: calibration"
    pred = model.predict(bank, paths, category.size, desc, index, check)
    lo, hi = cache.put(bank.category, "calibration", pred.maps, {"rel_paths": list(rel)})
    return M.CalibrationRange(len(rel), lo, hi)


def _check_report(
    category: Any, rel: list[str], test: list[np.ndarray], calibration: list[np.ndarray], n: int
) -> Report | None:
    """The source-check report from the per-source distance grids of the test images
    (`rel`, in order) and the calibration images (`defences.source_check`)."""
    samples = [category.find_test(r) for r in rel]
    defect_grids, cells, good = [], [], list(calibration)
    for sample, grid in zip(samples, test, strict=True):
        if sample.is_good:
            good.append(grid)
            continue
        masks = [r.mask for r in category.load_regions(sample)]
        if not masks:  # no ground truth (thin data): its defect patches are unknown
            continue
        defect_grids.append(grid)
        cells.append(defect_patch_mask(masks, grid.shape[1:]))
    return report(defect_grids, cells, good, n)


class _Scored:
    """What a node's phase A found: per category its test scores, calibration ranges and
    source-check report."""

    def __init__(self) -> None:
        self.test: dict[str, M.CategoryScores] = {}
        self.calibration: dict[str, M.CalibrationRange] = {}
        self.reports: dict[str, Report] = {}


def _score_category(
    model: PatchCore,
    node: NodeData,
    bank: Bank,
    rows: np.ndarray | None,
    cache: MapCache,
    out: _Scored,
    settings: RunSettings,
) -> None:
    cat = bank.category
    category = _category(node, cat)
    index = bank_index(bank.features, model.device, model.search)  # for both image sets
    check = None
    if rows is not None and bank_sources(rows):
        check = SourceDistances(bank.features, rows, device=model.device)
    rel = node.test.get(cat) or []
    if rel:
        out.test[cat] = _score_test(model, bank, index, category, rel, cache, check)
    test_grids = check.take() if check is not None else []
    if settings.calibration_folds >= 2 and node.fit.get(cat):
        # Cross-fitted: no image was held out; each fold is scored without this node's rows.
        found = crossfit.score_folds(model, bank, category, node.fit[cat], settings, cache)
        if found is not None:
            out.calibration[cat] = found
    elif node.calibration.get(cat):
        out.calibration[cat] = _score_calibration(
            model, bank, index, category, node.calibration[cat], cache, check
        )
    if check is not None and rel:
        found = _check_report(category, rel, test_grids, check.take(), len(check.sources))
        if found is not None:
            out.reports[cat] = found


def _crossfit(plan: M.Plan, node: NodeData) -> set[str]:
    """The categories whose training images this node calibrates by cross-fitting."""
    return set(node.fit) if plan.settings.calibration_folds >= 2 else set()


@named_errors
def handle_evaluate(msg: Message, context: Context) -> Message:
    plan = _plan(msg)
    facts = None
    if plan.settings.share_mode == "relay":
        device = _model(plan, context.node_config).device
        banks, facts = relay_banks(msg, plan, context, device)
    else:
        banks = _banks(msg, plan)
    sources = decode_sources(msg.content, {c: b.size for c, b in banks.items()})
    node = node_data(plan, context.node_config)
    cache = MapCache(cache_dir(plan, context))
    cache.reset()
    scored = _Scored()
    model = _model(plan, context.node_config)
    before = dict(model.seconds)
    for cat in sorted(set(node.test) | set(node.calibration) | _crossfit(plan, node)):
        if cat not in banks:
            log.warning("%s: the server sent no bank for it; its images are not scored", cat)
            continue
        model = _model(plan, context.node_config)
        found = sources.get(cat)
        _score_category(model, node, banks[cat], found, cache, scored, plan.settings)
    content = M.encode_score_reply(
        scored.test,
        fingerprint=plan.fingerprint,
        calibration=scored.calibration,
        timings=_spent(model, before, ("scoring",)),
    )
    add_reports(content, scored.reports)
    if facts is not None:
        content.config_records[RELAY_BANKS] = facts
    return Message(content, reply_to=msg)


# --------------------------------------------------------------------------- query


def local_metrics(cat: str, stats: Any, scores: np.ndarray, defects: list[str]) -> dict[str, float]:
    """A client's own metrics on its own test images (empty where undefined)."""
    from fedpatch_app.metrics import auc_spro_from_statistics, image_auroc

    out: dict[str, float] = {}
    if stats.n_regions > 0:
        try:
            spro = auc_spro_from_statistics(stats)
            for key, value in spro.auc.items():
                if value is not None and math.isfinite(float(value)):
                    # An area over its limit: float sums can give 1 + 2e-16.
                    out[f"{cat}.auc_spro.{key}"] = min(float(value), 1.0)
        except (DataError, ModelError) as exc:
            log.info("%s: no local AUC-sPRO (%s)", cat, exc)
    try:
        auroc = image_auroc(scores, defects)
        out[f"{cat}.image_auroc"] = float(auroc["mean"])
    except (DataError, ModelError) as exc:
        log.info("%s: no local image AUROC (%s)", cat, exc)
    return out


def _test_statistics(maps: np.ndarray, kept: list[int], category: Any, samples: list, scaling):
    """AUC-sPRO statistics of the images whose pixels are known: every good image and
    each defective one with a ground-truth mask (one without is left out: its defect
    pixels are unknown, so it is neither a good image nor a region)."""
    from fedpatch_app.metrics import level_edges, spro_statistics
    from fedpatch_app.metrics.availability import has_pixel_truth

    known = [i for i, s in enumerate(samples) if has_pixel_truth(s)]
    stats = spro_statistics([], [], level_edges())
    for begin in range(0, len(known), STATS_CHUNK):
        chunk = known[begin : begin + STATS_CHUNK]
        levels = [scaling.to_uint16(np.asarray(maps[kept[i]])) for i in chunk]
        regions = [category.load_regions(samples[i]) for i in chunk]
        part = spro_statistics(levels, regions, level_edges())
        stats = part if begin == 0 else stats.merge(part)
    return stats


def _query_test(
    cat: str, node: NodeData, cache: MapCache, scaling: MapScaling, maps_dir: str, excluded: set
):
    """Statistics and local metrics of the cached test maps of a category, leaving out the
    images the server excluded (None when none is left)."""
    from fedpatch_app.results.official_maps import write_category_maps

    maps, index = cache.get(cat, "test")
    kept = [i for i, r in enumerate(index["rel_paths"]) if r not in excluded]
    if not kept:
        return None
    category = _category(node, cat)
    samples = [category.find_test(index["rel_paths"][i]) for i in kept]
    stats = _test_statistics(maps, kept, category, samples, scaling)
    raw = np.asarray(index["scores"], dtype=np.float64)[kept]
    defects = [index["defects"][i] for i in kept]
    metrics = local_metrics(cat, stats, scaling.to_uint16(raw).astype(np.float64), defects)
    if maps_dir:
        write_category_maps(
            Path(maps_dir), category, samples, [np.asarray(maps[i]) for i in kept], scaling
        )
    return stats.to_arrays(), metrics


def _scaling_for(cat: str, scalings: Mapping[str, tuple[float, float]]) -> MapScaling:
    if cat not in scalings:
        raise ModelError(f"{cat}: scored here, but the server sent no scaling for it")
    return MapScaling(*scalings[cat])


@named_errors
def handle_query(msg: Message, context: Context) -> Message:
    """Phase B (or, for a node dropped after phase A, only the removal of its cached maps);
    the cached maps are removed whatever happens."""
    plan = _plan(msg)
    cache = MapCache(cache_dir(plan, context))
    try:
        phase = msg.content.config_records[M.CONFIG].get("phase")
        if phase == M.PHASE_RELEASE:
            return Message(RecordDict(), reply_to=msg)
        if phase == PHASE_MODEL:
            return handle_model(msg, plan, context)
        content = _statistics_reply(msg.content.config_records[M.CONFIG], plan, context, cache)
    finally:
        cache.remove()
        crossfit.remove_sent(cache.folder)
    return Message(content, reply_to=msg)


def _statistics_reply(config: Any, plan: M.Plan, context: Context, cache: MapCache) -> Any:
    from fedpatch_app.metrics.thresholds import CalibrationStats

    start = time.perf_counter()
    scalings = M.read_scalings(config, known_names(plan))
    excluded = M.read_exclusions(config, known_names(plan))
    node = node_data(plan, context.node_config)
    maps_dir = ""
    if plan.settings.write_maps:
        maps_dir = str(context.node_config.get("maps-dir") or plan.maps_dir)
    stats: dict[str, dict[str, np.ndarray]] = {}
    metrics: dict[str, float] = {}
    for cat in cache.categories("test"):
        scaling = _scaling_for(cat, scalings)
        found = _query_test(cat, node, cache, scaling, maps_dir, excluded.get(cat, set()))
        if found is not None:
            stats[cat], local = found
            metrics.update(local)
    calibration = {}
    for cat in cache.categories("calibration"):
        maps, _ = cache.get(cat, "calibration")
        calibration[cat] = CalibrationStats.of_maps(maps, _scaling_for(cat, scalings)).to_arrays()
        del maps
    return M.encode_stats_reply(
        stats,
        metrics,
        fingerprint=plan.fingerprint,
        calibration=calibration,
        timings={"statistics": round(time.perf_counter() - start, 3)},
    )
