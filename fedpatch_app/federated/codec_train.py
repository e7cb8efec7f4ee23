"""The train exchange: the plan down, one local coreset per category up.

down: ConfigRecord "config" = the run plan.
up:   ArrayRecord "coresets" = {category: (M, D) float32|float16 local coreset};
      ConfigRecord "info" = fingerprint, partition id, categories, and per category
      "n-patches.<cat>", "n-images.<cat>", "radius.<cat>" (under DP also the noisy counts,
      the public centres' digest and the noise facts; ArrayRecord "public-centres").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedpatch_app.federated.codec_relay import decode_key_id, decode_sealed
from fedpatch_app.federated.plan import Plan
from fedpatch_app.federated.wire import (
    CORESETS,
    INFO,
    MAX_FIELD_TEXT,
    MAX_PATCHES,
    PUBLIC,
    TRANSPORT_DTYPES,
    InvalidReply,
    array_of,
    check_declared,
    check_fingerprint,
    decode_array,
    read_timings,
    reply_categories,
    reply_info,
    timing_info,
    typed,
)
from fedpatch_app.settings import RunSettings

#: Partition ids a client may claim (-1: a client that holds whole categories).
MAX_PARTITIONS = 1000
#: The longest local training time a reply may claim (one week).
MAX_SECONDS = 7 * 24 * 3600.0
#: The largest local covering radius a reply may claim (patch features are averages of
#: bounded activations: honest radii are tens).
MAX_RADIUS = 1e6
#: Categories a reply may hold when the run names none (the clients' own).
MAX_CATEGORIES = 1000
#: The largest image side a reply may declare.
MAX_SIDE = 65535


@dataclass
class LocalCoreset:
    """One category's coreset from one client, after the checks."""

    features: np.ndarray
    n_patches: int
    n_images: int
    radius: float
    #: Under DP: `features` are noisy per-cluster SUMS; this holds the noisy "counts"
    #: (K,), the public "centres" (K, D) and their "digest", and the noise and budget facts.
    dp: dict[str, Any] | None = None
    #: Under share-mode relay: the sealed rows (nonce + ciphertext); `features` is then a
    #: zero-width stand-in (M, 0) that only counts the rows.
    sealed: bytes | None = None


@dataclass
class TrainReply:
    fingerprint: str
    partition_id: int
    coresets: dict[str, LocalCoreset]
    seconds: float = 0.0
    device: str = ""
    #: The client's seconds per phase ("extraction", "coreset").
    timings: dict[str, float] = field(default_factory=dict)
    #: The size (width, height) its images of each category were scored at.
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Under share-mode relay: the public name of the share key the coresets are sealed with.
    key_id: str = ""
    #: Under share-mode relay: the partition the client named in the associated data of
    #: its ciphertexts (the one it claimed; node-identities may bind it to another).
    sealed_as: int = -1


@dataclass(frozen=True)
class TrainLimits:
    """What the server accepts from a client's train reply: the run's settings, its
    feature-spec fingerprint and width, the categories it knows (any valid name when the
    run names none) and their agreed sizes where the plan fixes them."""

    settings: RunSettings
    fingerprint: str
    categories: Sequence[str]
    embed_dim: int
    #: Patches per training image of each category whose size the plan fixes: the
    #: feature grid the spec gives that size.
    grid: Mapping[str, int]
    #: The feature spec (the grid of a category whose size a reply declares).
    spec: Any = None
    #: The agreed (width, height) of each category the plan fixes.
    sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, plan: Plan, categories: Sequence[str] | None = None) -> TrainLimits:
        from fedpatch_app.federated.plan import known_names
        from fedpatch_app.model.patchcore import patch_grid

        grid = {c: math.prod(patch_grid(plan.spec, s)) for c, s in plan.sizes.items()}
        cats = known_names(plan) if categories is None else categories
        dim = int(plan.spec.embed_dim)
        return cls(plan.settings, plan.fingerprint, cats, dim, grid, plan.spec, dict(plan.sizes))

    def patches_per_image(self, cat: str, size: tuple[int, int] | None) -> int:
        """Patches per image of a category scored at `size` (None: the planned size)."""
        from fedpatch_app.model.patchcore import patch_grid

        if cat in self.grid and (size is None or cat not in self.sizes):
            return self.grid[cat]
        if size is None or self.spec is None:
            raise InvalidReply(f"{cat}: no image size declared")
        return math.prod(patch_grid(self.spec, size))

    def max_coreset(self, n_patches: int) -> int:
        """The largest local coreset a client with `n_patches` patches may send (under DP:
        exactly one noisy sum per public centre)."""
        from fedpatch_app.model.patchcore import coreset_size

        s = self.settings
        if s.dp.enabled:
            return min(s.max_coreset_rows, s.dp.centres)
        return min(
            s.max_coreset_rows, coreset_size(n_patches, s.coreset_ratio * s.local_oversample)
        )


def encode_train_reply(
    coresets: Mapping[str, Any],
    n_images: Mapping[str, int],
    *,
    fingerprint: str,
    partition_id: int,
    transport_dtype: str = "float32",
    seconds: float = 0.0,
    device: str = "",
    timings: Mapping[str, float] | None = None,
    sizes: Mapping[str, tuple[int, int]] | None = None,
) -> RecordDict:
    """A client's train reply from its local banks (`Bank`-like: features, radius, n_patches)."""
    dtype = TRANSPORT_DTYPES[transport_dtype]
    arrays = ArrayRecord()
    info = ConfigRecord(
        {
            "fingerprint": fingerprint,
            "partition-id": int(partition_id),
            "categories": ",".join(coresets),
            "seconds": float(seconds),
            **timing_info(timings or {}),
            "device": device,
        }
    )
    for cat, bank in coresets.items():
        arrays[cat] = array_of(np.asarray(bank.features).astype(dtype, copy=False))
        info[f"n-patches.{cat}"] = int(bank.n_patches)
        info[f"n-images.{cat}"] = int(n_images[cat])
        info[f"radius.{cat}"] = float(bank.radius)
        if sizes and cat in sizes:
            info[f"size.{cat}"] = [int(v) for v in sizes[cat]]
    return RecordDict({CORESETS: arrays, INFO: info})


def _reply_header(info: ConfigRecord) -> tuple[int, float, str]:
    """Partition id, seconds and device of a train reply, each checked for sense."""
    try:
        partition_id = int(typed(info, "partition-id", int))
        seconds = float(typed(info, "seconds", (int, float)))
        device = typed(info, "device", str)
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"reply info: {exc}") from None
    if not -1 <= partition_id < MAX_PARTITIONS:
        raise InvalidReply(
            f"reply info: partition id {partition_id} is outside -1..{MAX_PARTITIONS - 1}"
        )
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SECONDS):
        raise InvalidReply(
            f"reply info: {seconds} seconds is not a time between 0 and {MAX_SECONDS:g}"
        )
    if len(device) > MAX_FIELD_TEXT:
        raise InvalidReply(f"reply info: a device name of {len(device)} characters")
    return partition_id, seconds, device


def _coreset_arrays(content: RecordDict, cats: Sequence[str]) -> ArrayRecord:
    arrays = content.array_records.get(CORESETS)
    if arrays is None:
        if cats:
            raise InvalidReply(f"reply lacks the '{CORESETS}' array record")
        return ArrayRecord()
    extra = sorted(set(arrays.keys()) - set(cats))
    if extra:
        raise InvalidReply(f"coresets sent for categories not listed in the reply: {extra}")
    return arrays


def _size(info: ConfigRecord, cat: str, limits: TrainLimits) -> tuple[int, int] | None:
    """The size a category's images were scored at: the agreed one where the plan fixes
    it (a reply declaring another is refused), else the one declared (None: none)."""
    agreed = limits.sizes.get(cat)
    value = info.get(f"size.{cat}")
    if value is None:
        return agreed
    ok = isinstance(value, list) and len(value) == 2
    if not ok or not all(isinstance(v, int) and 1 <= v <= MAX_SIDE for v in value):
        raise InvalidReply(f"{cat}: image size {value!r} is not [width, height]")
    size = (int(value[0]), int(value[1]))
    if agreed is not None and size != tuple(agreed):
        raise InvalidReply(
            f"{cat}: images scored at {size[0]}x{size[1]}, but the run's size of {cat} is "
            f"{agreed[0]}x{agreed[1]}"
        )
    return size


def _counts(
    info: ConfigRecord, cat: str, limits: TrainLimits, size: tuple[int, int] | None
) -> tuple[int, int, float]:
    """Declared (patches, images, local radius) of one category, checked for sense."""
    try:
        n_patches = typed(info, f"n-patches.{cat}", int)
        n_images = typed(info, f"n-images.{cat}", int)
        radius = float(typed(info, f"radius.{cat}", (int, float)))
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"{cat}: {exc}") from None
    if not 1 <= n_images <= n_patches <= MAX_PATCHES:
        raise InvalidReply(f"{cat}: implausible counts ({n_images} images, {n_patches} patches)")
    grid = limits.patches_per_image(cat, size)
    if n_patches != n_images * grid:
        raise InvalidReply(
            f"{cat}: {n_patches} patches declared for {n_images} images, but the run's features "
            f"give {grid} patches per {cat} image"
        )
    if not (math.isfinite(radius) and 0 <= radius <= MAX_RADIUS):
        raise InvalidReply(
            f"{cat}: covering radius {radius} is not a finite value in [0, {MAX_RADIUS:g}]"
        )
    return n_patches, n_images, radius


def _coreset(arr: Any, cat: str, n_patches: int, limits: TrainLimits) -> np.ndarray:
    """One category's coreset rows: shape against the spec and the allowed size, then the
    data itself (decoded without pickle, finite)."""
    s = limits.settings
    dtypes = ["float32"] + (["float16"] if s.transport_dtype == "float16" else [])
    check_declared(arr, f"{cat} coreset", dtypes=dtypes, ndim=2, max_elements=2**62)
    rows, dim = arr.shape
    if dim != limits.embed_dim:
        raise InvalidReply(f"{cat}: feature dimension {dim}, the run's spec has {limits.embed_dim}")
    if rows < 1:
        raise InvalidReply(f"{cat}: empty coreset")
    max_rows = limits.max_coreset(n_patches)
    if rows > max_rows:
        raise InvalidReply(
            f"{cat}: coreset of {rows} rows exceeds the allowed {max_rows} "
            f"({n_patches} patches x ratio {s.coreset_ratio} x oversample "
            f"{s.local_oversample}, cap {s.max_coreset_rows})"
        )
    values = decode_array(
        arr, f"{cat} coreset", dtypes=dtypes, ndim=2, max_elements=max_rows * limits.embed_dim
    )
    return values.astype(np.float32, copy=False)


def decode_train_reply(content: RecordDict, limits: TrainLimits) -> TrainReply:
    """Check a train reply completely; `InvalidReply` says what is wrong."""
    info = reply_info(content, len(limits.categories) or MAX_CATEGORIES)
    fingerprint = check_fingerprint(info, limits.fingerprint)
    cats = reply_categories(info, limits.categories)
    relayed = limits.settings.share_mode == "relay"
    arrays = ArrayRecord() if relayed else _coreset_arrays(content, cats)
    partition_id, seconds, device = _reply_header(info)
    out: dict[str, LocalCoreset] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for cat in cats:
        if not relayed and cat not in arrays:
            raise InvalidReply(f"{cat}: listed but no coreset array sent")
        size = _size(info, cat, limits)
        if size is not None:
            sizes[cat] = size
        n_patches, n_images, radius = _counts(info, cat, limits, size)
        if relayed:
            max_rows = limits.max_coreset(n_patches)
            stand_in, sealed = decode_sealed(content, info, cat, max_rows, limits.embed_dim)
            out[cat] = LocalCoreset(stand_in, n_patches, n_images, radius, sealed=sealed)
            continue
        features = _coreset(arrays[cat], cat, n_patches, limits)
        dp = None
        if limits.settings.dp.enabled:
            rows = features.shape[0]
            dp = _decode_dp_info(info, cat, rows)
            dp["centres"] = _decode_public_centres(content, cat, rows, limits.embed_dim, dp)
        out[cat] = LocalCoreset(features, n_patches, n_images, radius, dp)
    timings = read_timings(info)
    key_id = decode_key_id(info) if relayed else ""
    return TrainReply(
        fingerprint, partition_id, out, seconds, device, timings, sizes, key_id, partition_id
    )


#: Per-category info keys of a DP train reply (float values, besides counts and digest).
DP_FLOAT_KEYS = ("clip", "sigma-sums", "sigma-counts", "sigma-images", "rho", "epsilon", "delta")


def dp_info(cat: str, release: Any, digest: str, clip: float) -> dict[str, Any]:
    """Info entries of one category's DP release (`fedpatch_app.model.dp.NoisyRelease`)."""
    return {
        f"dp-counts.{cat}": [float(c) for c in release.counts],
        f"dp-digest.{cat}": digest,
        f"dp-clip.{cat}": float(clip),
        f"dp-sigma-sums.{cat}": float(release.sigmas["sums"]),
        f"dp-sigma-counts.{cat}": float(release.sigmas["counts"]),
        f"dp-sigma-images.{cat}": float(release.sigmas["images"]),
        f"dp-rho.{cat}": float(release.rho),
        f"dp-epsilon.{cat}": float(release.epsilon),
        f"dp-delta.{cat}": float(release.delta),
    }


def _decode_dp_info(info: ConfigRecord, cat: str, rows: int) -> dict[str, Any]:
    try:
        counts = typed(info, f"dp-counts.{cat}", list)
        digest = typed(info, f"dp-digest.{cat}", str)
        values = {k: float(typed(info, f"dp-{k}.{cat}", (int, float))) for k in DP_FLOAT_KEYS}
    except (KeyError, TypeError) as exc:
        raise InvalidReply(f"{cat}: DP reply: {exc}") from None
    if len(counts) != rows or not all(
        isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in counts
    ):
        raise InvalidReply(f"{cat}: DP reply: {rows} noisy counts expected, finite numbers")
    if not all(math.isfinite(v) and v >= 0 for v in values.values()):
        raise InvalidReply(f"{cat}: DP reply: noise and budget facts must be finite and >= 0")
    if not values["sigma-counts"] > 0 or not values["sigma-sums"] > 0:
        raise InvalidReply(f"{cat}: DP reply: no noise (sigma 0)")
    return {"counts": np.asarray(counts, dtype=np.float64), "digest": digest, **values}


def public_centres_record(centres: Mapping[str, np.ndarray]) -> ArrayRecord:
    """The public centres of a DP train reply, float32, one array per category."""
    return ArrayRecord(
        {cat: array_of(np.asarray(c, dtype=np.float32)) for cat, c in centres.items()}
    )


def _decode_public_centres(
    content: RecordDict, cat: str, rows: int, dim: int, dp: dict[str, Any]
) -> np.ndarray:
    """The public centres of one category, checked against the digest the sums refer to."""
    from fedpatch_app.model.dp import centres_digest

    record = content.array_records.get(PUBLIC)
    if record is None or cat not in record:
        raise InvalidReply(f"{cat}: DP reply without its public centres ('{PUBLIC}')")
    centres = decode_array(
        record[cat], f"{cat} public centres", dtypes=["float32"], ndim=2, max_elements=rows * dim
    )
    if centres.shape != (rows, dim):
        raise InvalidReply(
            f"{cat}: {centres.shape[0]}x{centres.shape[1]} public centres for {rows}x{dim} sums"
        )
    if centres_digest(centres, dp["clip"]) != dp["digest"]:
        raise InvalidReply(f"{cat}: the public centres do not match the digest of the release")
    return centres.astype(np.float64)
