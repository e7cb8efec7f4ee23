"""The results schema shared by every run kind (centralized, federated, local-only, evaluate).

``<run>/results.json``::

    {
      "schema": "fedpatch-results/1",
      "run": {"kind": str, "name": str, "config": {...}, "weights": str, "seconds": {...}},
      "categories": {
        "<category>": {
          "auc_spro": {"0.01": x, "0.05": x, "0.1": x, "0.3": x, "1.0": x},
          "image_auroc": {"mean": x, "pooled": x, "<defect>": x, ...},
          "counts": {"train": n, "test_good": n, "test_defective": n},
          "auc_spro_per_defect": {"<defect>": {"0.01": x, ...}},      (optional)
          ...                                                          (optional extras)
        }
      },
      "mean": {"auc_spro": {"0.01": x, ...}, "image_auroc": x},
      "warnings": [str, ...],
      "fairness": {...},                    (spread across categories and clients, always)
      ...                                   (optional top-level extras, e.g. "federated",
                                             "privacy")
    }

Categories are written in sorted order. A value that is not a finite number (an AUROC
that is undefined, e.g. no good test image) is written as ``null``. The mean over
categories ignores such values and is ``null`` when no category has one.

Next to it: ``curves.npz`` (``<cat>/spro_fpr``, ``<cat>/spro``, ``<cat>/roc_fpr``,
``<cat>/roc_tpr``) and ``scores/<category>.csv`` (``rel_path,defect,score``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.errors import DataError
from fedpatch_app.jsonio import read_json

log = logging.getLogger(__name__)

SCHEMA = "fedpatch-results/1"
RESULTS_FILE = "results.json"
CURVES_FILE = "curves.npz"
SCORES_DIR = "scores"
#: Keys of the FPR limits in every "auc_spro" dict (same as metrics.FPR_LIMITS).
LIMIT_KEYS: tuple[str, ...] = ("0.01", "0.05", "0.1", "0.3", "1.0")
#: Curves stored per category in curves.npz.
CURVE_KEYS: tuple[str, ...] = ("spro_fpr", "spro", "roc_fpr", "roc_tpr")
#: Run kinds written by fedpatch itself (others are accepted).
KINDS: tuple[str, ...] = ("centralized", "federated", "local-only", "evaluate")
RUN_KEYS: tuple[str, ...] = ("kind", "name", "config", "weights", "seconds")
COUNT_KEYS: tuple[str, ...] = ("train", "test_good", "test_defective")


# --------------------------------------------------------------------------- values


def _number(value: Any) -> float | None:
    """A finite float, or None for a missing / NaN / infinite value."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _number(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _limit_dict(values: Mapping[Any, Any], what: str) -> dict[str, float | None]:
    """Normalise an AUC-sPRO dict to the five limit keys (accepts 0.05 or "0.05")."""
    out: dict[str, float | None] = {}
    by_key = {_limit_key(k): v for k, v in values.items()}
    for key in LIMIT_KEYS:
        if key not in by_key:
            raise ValueError(f"{what} lacks the FPR limit {key!r}")
        out[key] = _number(by_key[key])
    return out


def _limit_key(key: Any) -> str:
    try:
        return str(float(key))
    except (TypeError, ValueError):
        return str(key)


# --------------------------------------------------------------------------- building


def category_block(
    auc_spro: Mapping[Any, Any],
    image_auroc: Mapping[str, Any],
    counts: Mapping[str, Any],
    *,
    auc_spro_per_defect: Mapping[str, Mapping[Any, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One category's entry of ``results["categories"]``.

    ``auc_spro``: AUC-sPRO per FPR limit (keys 0.01 ... 1.0, floats or strings);
    ``image_auroc``: ``{"mean", "pooled", <defect>...}``; ``counts``: train, test_good,
    test_defective. Extras (timings, bank sizes, ...) are kept as given (JSON-ready).
    """
    for key in ("mean", "pooled"):
        if key not in image_auroc:
            raise ValueError(f"image_auroc lacks {key!r}")
    for key in COUNT_KEYS:
        if key not in counts:
            raise ValueError(f"counts lack {key!r}")
    block: dict[str, Any] = {
        "auc_spro": _limit_dict(auc_spro, "auc_spro"),
        "image_auroc": {
            "mean": _number(image_auroc["mean"]),
            "pooled": _number(image_auroc["pooled"]),
            **{
                str(k): _number(v)
                for k, v in sorted(image_auroc.items())
                if k not in ("mean", "pooled")
            },
        },
        "counts": {str(k): int(v) for k, v in counts.items()},
    }
    if auc_spro_per_defect is not None:
        block["auc_spro_per_defect"] = {
            str(d): _limit_dict(v, f"auc_spro_per_defect[{d!r}]")
            for d, v in sorted(auc_spro_per_defect.items())
        }
    for key, value in extra.items():
        block[key] = _plain(value)
    return block


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(sum(present) / len(present)) if present else None


def mean_block(categories: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over categories: of each AUC-sPRO limit, and of each image_auroc["mean"]."""
    blocks = list(categories.values())
    return {
        "auc_spro": {
            key: _mean([_number(b["auc_spro"].get(key)) for b in blocks]) for key in LIMIT_KEYS
        },
        "image_auroc": _mean([_number(b["image_auroc"].get("mean")) for b in blocks]),
    }


def features_facts(spec: Any) -> dict[str, Any]:
    """``run.features``: what features a run computed (a ``FeatureSpec``)."""
    portable = spec.with_weights_id()
    return {
        "backbone": portable.backbone,
        "weights": portable.weights,
        "random_weights": portable.weights == "none",
        "fingerprint": spec.fingerprint(),
        "spec": portable.to_dict(),
    }


def data_facts(
    kind: str,
    root: str | Path,
    categories: Sequence[str],
    synthetic: Mapping[str, Any] | None,
    layouts: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """``run.data``: "synthetic" whenever the data are the generator's (with its kind,
    scale, seed), else "autovi" (a folder of images read by the run); with the layout of
    each category where known and a name a person can read (`training_data.dataset_name`:
    never AutoVI for synthetic data)."""
    from fedpatch_app.inspection.training_data import dataset_name

    layouts = dict(layouts or {})
    return {
        "kind": "synthetic" if synthetic else kind,
        "name": dataset_name(root, synthetic, [v for v in layouts.values() if v]),
        "layouts": layouts,
        "synthetic": dict(synthetic) if synthetic else None,
        "root": str(root),
        "categories": list(categories),
    }


def _threshold_warnings(
    categories: Mapping[str, Mapping[str, Any]], already: Sequence[str]
) -> list[str]:
    """A warning per category whose image threshold rests on too few scores, and per
    category whose AUC-sPRO leaves defective images without a mask out."""
    from fedpatch_app.metrics.pooling import spro_support_warning
    from fedpatch_app.metrics.thresholds import support_warning

    found = [support_warning(c, b.get("thresholds")) for c, b in categories.items()]
    found += [spro_support_warning(c, b.get("auc_spro_rests_on")) for c, b in categories.items()]
    return [w for w in found if w is not None and w not in already]


def build_results(
    kind: str,
    name: str,
    config: Mapping[str, Any],
    weights: Any,
    seconds: Mapping[str, Any],
    categories: Mapping[str, Mapping[str, Any]],
    *,
    run_facts: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The whole results dict: run facts, sorted categories, their mean, extras.

    ``run_facts`` are added to the ``run`` block (``features``, ``data``, ``status``,
    ``outputs``, ``threads``); ``extra`` becomes top-level keys (e.g. ``warnings=[...]``,
    ``federated={...}``); ``warnings`` is always present (an empty list when none).
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError("results need a non-empty run kind")
    if kind not in KINDS:
        log.debug("run kind %r is not one of %s", kind, KINDS)
    cats = {str(c): dict(categories[c]) for c in sorted(categories)}
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "run": {
            "kind": kind,
            "name": str(name),
            "config": _plain(dict(config)),
            "weights": _plain(weights),
            "seconds": _plain(dict(seconds)),
            **_plain(dict(run_facts or {})),
        },
        "categories": _plain(cats),
        "mean": mean_block(cats),
    }
    warnings = list(extra.pop("warnings", None) or [])
    warnings += _threshold_warnings(cats, warnings)
    results["warnings"] = [str(w) for w in warnings]
    for key, value in extra.items():
        if key in results:
            raise ValueError(f"extra results key {key!r} would overwrite a schema key")
        results[key] = _plain(value)
    if "fairness" not in results:
        from fedpatch_app.metrics.fairness import fairness_block

        results["fairness"] = _plain(fairness_block(results))
    return results


# --------------------------------------------------------------------------- validation


def _require(obj: Any, keys: Sequence[str], where: str, path: Path) -> None:
    if not isinstance(obj, Mapping):
        raise DataError(f"results file {path}: {where or 'top level'} is not an object")
    for key in keys:
        if key not in obj:
            dotted = f"{where}.{key}" if where else key
            raise DataError(f"results file {path} lacks the key {dotted!r}")


def validate_results(results: Any, path: str | Path = "<results>") -> None:
    """DataError naming ``path`` and the first missing key, if ``results`` breaks the schema."""
    path = Path(path)
    _require(results, ("run", "categories", "mean"), "", path)
    _require(results["run"], RUN_KEYS, "run", path)
    if not isinstance(results["categories"], Mapping):
        raise DataError(f"results file {path}: 'categories' is not an object")
    for cat, block in results["categories"].items():
        where = f"categories.{cat}"
        _require(block, ("auc_spro", "image_auroc", "counts"), where, path)
        _require(block["auc_spro"], LIMIT_KEYS, f"{where}.auc_spro", path)
        _require(block["image_auroc"], ("mean", "pooled"), f"{where}.image_auroc", path)
        _require(block["counts"], COUNT_KEYS, f"{where}.counts", path)
    _require(results["mean"], ("auc_spro", "image_auroc"), "mean", path)
    _require(results["mean"]["auc_spro"], LIMIT_KEYS, "mean.auc_spro", path)
    if "warnings" in results and not isinstance(results["warnings"], list):
        raise DataError(f"results file {path}: 'warnings' is not a list")


# --------------------------------------------------------------------------- files


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(run_dir: str | Path, results: Mapping[str, Any]) -> Path:
    """Write ``<run_dir>/results.json`` atomically (validated, categories sorted)."""
    path = Path(run_dir) / RESULTS_FILE
    data = _plain(dict(results))
    data["categories"] = {c: data["categories"][c] for c in sorted(data.get("categories", {}))}
    validate_results(data, path)
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    _atomic_write_bytes(path, text.encode("utf-8"))
    log.info("wrote %s", path)
    return path


def results_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/results.json``."""
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json (a run folder or the file itself)."""
    path = results_path(path)
    results = read_json(path, DataError, "results file")
    validate_results(results, path)
    results.setdefault("warnings", [])
    return results


def write_curves(run_dir: str | Path, curves: Mapping[str, Any]) -> Path:
    """Write ``<run_dir>/curves.npz``.

    ``curves`` is ``{category: {"spro_fpr": arr, "spro": arr, "roc_fpr": arr, "roc_tpr": arr}}``
    (or already flat: ``{"<cat>/spro_fpr": arr, ...}``). Arrays are stored as float64.
    """
    flat: dict[str, np.ndarray] = {}
    for key, value in curves.items():
        if isinstance(value, Mapping):
            for sub, arr in value.items():
                flat[f"{key}/{sub}"] = np.asarray(arr, dtype=np.float64)
        else:
            flat[str(key)] = np.asarray(value, dtype=np.float64)
    path = Path(run_dir) / CURVES_FILE
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **dict(sorted(flat.items())))
    _atomic_write_bytes(path, buffer.getvalue())
    return path


def load_curves(run_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``{category: {curve name: float64 array}}`` from ``<run_dir>/curves.npz``."""
    path = Path(run_dir) / CURVES_FILE
    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                cat, _, name = key.rpartition("/")
                out.setdefault(cat, {})[name] = np.asarray(npz[key])
    except FileNotFoundError:
        raise DataError(f"curves file {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"curves file {path} is unreadable: {exc}") from None
    return out


@dataclass
class Scores:
    """Image scores of one category, one row per test image."""

    rel_paths: list[str]
    defects: list[str]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.rel_paths)


def write_scores(
    run_dir: str | Path,
    category: str,
    samples: Sequence[Any],
    scores: Sequence[float],
    *,
    threshold: float | None = None,
) -> Path:
    """Write ``<run_dir>/scores/<category>.csv``, one row per sample: rel_path, defect,
    score (the raw nearest-neighbour distance, the map maximum) and normalized_score
    (score / the image threshold; empty when the run has no calibrated threshold)."""
    if len(samples) != len(scores):
        raise ValueError(f"{category}: {len(scores)} scores for {len(samples)} test images")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rel_path", "defect", "score", "normalized_score"])
    for sample, score in zip(samples, scores, strict=True):
        normalized = "" if not threshold else repr(float(score) / threshold)
        writer.writerow([sample.rel_path, sample.defect, repr(float(score)), normalized])
    path = Path(run_dir) / SCORES_DIR / f"{category}.csv"
    _atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
    return path


def load_scores(run_dir: str | Path, category: str) -> Scores:
    """Read ``<run_dir>/scores/<category>.csv`` (DataError naming the file)."""
    path = Path(run_dir) / SCORES_DIR / f"{category}.csv"
    rel_paths: list[str] = []
    defects: list[str] = []
    values: list[float] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"rel_path", "defect", "score"} <= set(
                reader.fieldnames
            ):
                raise DataError(f"scores file {path} lacks the header rel_path,defect,score")
            for line, row in enumerate(reader, start=2):
                try:
                    values.append(float(row["score"]))
                except (TypeError, ValueError):
                    raise DataError(f"scores file {path}, line {line}: bad score") from None
                rel_paths.append(row["rel_path"])
                defects.append(row["defect"])
    except FileNotFoundError:
        raise DataError(f"scores file {path} is missing") from None
    except OSError as exc:
        raise DataError(f"scores file {path} is unreadable: {exc}") from None
    return Scores(rel_paths, defects, np.asarray(values, dtype=np.float64))
