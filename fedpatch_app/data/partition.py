"""Split AutoVI categories across federated clients.

Three schemes (the `partition` setting; clients, Dirichlet alpha and seed are run settings
too):

- ``category`` (non-IID, five clients): each production line owns whole categories
  (client 0 engine_wiring; 1 underbody_pipes + underbody_screw; 2 tank_screw + pipe_staple;
  3 pipe_clip) and a "mixed QC" client 4 holds a fraction (10 %, at least one image) of the
  train images of every category, taken from the owning line. The lines are mapped by
  ``conf/partitions/category.yaml`` (`partition_schemes.load_lines`).
- ``iid``: every category's train images are shuffled and split uniformly across the
  clients (stratified per category, per-client counts differ by at most one).
- ``dirichlet``: for every category, client proportions are drawn from Dir(alpha); every
  image is assigned once, and every client gets at least one train image.

Test images of a category go to the clients that hold train images of it, in proportion to
their share of its train images, stratified by defect type (largest-remainder rounding per
defect type). Every train and test image is in exactly one client. Paths are relative to the
category folder (``train/good/0000.png``, ``test/<defect>/0003.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.data.autovi import Category
from fedpatch_app.data.autovi_release import CATEGORIES as AUTOVI_SEED_ORDER
from fedpatch_app.data.layouts import NAME_RULE, available_categories, load_category
from fedpatch_app.data.partition_schemes import CONF_DIR, SCHEMES, LineMap, load_lines
from fedpatch_app.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = [
    "SCHEMES",
    "CONF_DIR",
    "ClientShare",
    "LineMap",
    "Partition",
    "client_share",
    "load_lines",
    "make_partition",
    "run_cli",
]


_SCHEME_CODES = {"category": 1, "iid": 2, "dirichlet": 3}


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class ClientShare:
    """The images one client holds: ``{category: [relative paths]}`` for train and test."""

    client: int
    train: dict[str, list[str]]
    test: dict[str, list[str]]

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories with at least one train image at this client, sorted."""
        return tuple(sorted(c for c in self.train if self.train[c]))

    @property
    def num_train(self) -> int:
        return sum(len(v) for v in self.train.values())

    @property
    def num_test(self) -> int:
        return sum(len(v) for v in self.test.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "train": {c: list(v) for c, v in self.train.items()},
            "test": {c: list(v) for c, v in self.test.items()},
        }


@dataclass(frozen=True)
class Partition:
    """A split of the data across clients; ``clients[i].client == i``."""

    scheme: str
    seed: int
    clients: list[ClientShare]

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories held by any client, sorted."""
        return tuple(sorted({c for share in self.clients for c in (*share.train, *share.test)}))

    def client(self, client_id: int) -> ClientShare:
        """The share of one client; `ConfigError` if there is no such client."""
        return client_share(self, client_id)

    def to_json(self) -> dict[str, Any]:
        """``{"scheme", "seed", "clients": [{"client", "train", "test"}, ...]}``."""
        return {
            "scheme": self.scheme,
            "seed": self.seed,
            "clients": [share.to_json() for share in self.clients],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "partition JSON") -> Partition:
        """Rebuild a partition from `to_json` output, checking it (`ConfigError` if malformed)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected an object, got {type(data).__name__}")
        missing = [k for k in ("scheme", "seed", "clients") if k not in data]
        if missing:
            raise ConfigError(f"{source}: missing keys {', '.join(missing)}")
        scheme, seed, clients = data["scheme"], data["seed"], data["clients"]
        if scheme not in SCHEMES:
            raise ConfigError(f"{source}: unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"{source}: seed must be an integer, got {seed!r}")
        if not isinstance(clients, list) or not clients:
            raise ConfigError(f"{source}: 'clients' must be a non-empty list")
        shares = []
        seen: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(clients):
            where = f"{source}: clients[{i}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{where}: expected an object")
            if entry.get("client") != i or isinstance(entry.get("client"), bool):
                raise ConfigError(f"{where}: 'client' must be {i}, got {entry.get('client')!r}")
            parts = {}
            for split in ("train", "test"):
                block = entry.get(split, {})
                if not isinstance(block, Mapping):
                    raise ConfigError(f"{where}: '{split}' must map categories to path lists")
                parts[split] = {}
                for cat, paths in block.items():
                    if not isinstance(cat, str) or not NAME_RULE.match(cat):
                        raise ConfigError(f"{where}: bad category name {cat!r} in '{split}'")
                    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                        raise ConfigError(f"{where}: {split}.{cat} must be a list of paths")
                    for p in paths:
                        starts = ("train/", "good/") if split == "train" else ("test/",)
                        if not p.startswith(starts) or ".." in Path(p).parts:
                            raise ConfigError(
                                f"{where}: {split} path {p!r} of {cat} must be relative to the "
                                f"category folder and start with {' or '.join(starts)}"
                            )
                        if (cat, p) in seen:
                            raise ConfigError(
                                f"{where}: {cat}/{p} is also in client {seen[(cat, p)]}"
                            )
                        seen[(cat, p)] = i
                    parts[split][cat] = list(paths)
            shares.append(ClientShare(i, parts["train"], parts["test"]))
        return cls(scheme, seed, shares)


def client_share(partition: Partition, client_id: int) -> ClientShare:
    """The share of client ``client_id``; `ConfigError` naming the client if out of range."""
    if isinstance(client_id, bool) or not isinstance(client_id, int | np.integer):
        raise ConfigError(f"client id must be an integer, got {client_id!r}")
    if not 0 <= client_id < partition.num_clients:
        raise ConfigError(
            f"client {client_id} is not in the {partition.scheme} partition "
            f"(clients 0..{partition.num_clients - 1})"
        )
    return partition.clients[int(client_id)]


def _largest_remainder(
    quotas: np.ndarray, total: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Integer counts summing to ``total``, closest to ``quotas`` (which sum to ``total``).

    Floors first, then one more to the largest fractional parts; ties are broken in a
    random (seeded) order if ``rng`` is given, else by lower client id. Clients with a zero
    quota get nothing.
    """
    quotas = np.asarray(quotas, dtype=np.float64)
    n = len(quotas)
    rank = rng.permutation(n) if rng is not None else np.arange(n)
    counts = np.minimum(np.floor(quotas + 1e-9).astype(np.int64), total)
    left = total - int(counts.sum())
    if left > 0:
        frac = np.where(quotas > 0, quotas - counts, -1.0)
        order = sorted(range(n), key=lambda i: (-round(frac[i], 9), rank[i]))
        for i in order[:left]:
            counts[i] += 1
    while counts.sum() > total:  # only from rounding noise: take back from the largest
        counts[int(np.argmax(counts))] -= 1
    return counts


def _deal(items: Sequence[str], counts: np.ndarray, rng: np.random.Generator) -> list[list[str]]:
    """Shuffle ``items`` and cut them into consecutive groups of ``counts``, each sorted."""
    order = rng.permutation(len(items))
    out, start = [], 0
    for n in counts:
        out.append(sorted(items[j] for j in order[start : start + int(n)]))
        start += int(n)
    return out


def _split_train(
    scheme: str,
    lines: LineMap | None,
    cat: Category,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
) -> list[list[str]]:
    """The train images (relative paths) of each client for one category."""
    items = list(cat.train_rel)
    n = len(items)
    if scheme == "category":
        assert lines is not None
        qc = lines.mixed_qc
        k = max(qc.min_per_category, math.floor(qc.fraction * n + 0.5))
        if n < k + 1:
            raise ConfigError(
                f"category partition: {cat.name} has {n} train images, too few to give "
                f"{k} to the {qc.name} client (client {qc.client}) and keep one for "
                f"client {lines.owner(cat.name)}"
            )
        counts = np.zeros(num_clients, dtype=np.int64)
        counts[qc.client] = k
        counts[lines.owner(cat.name)] = n - k
        return _deal(items, counts, rng)
    if scheme == "iid":
        if n < num_clients:
            raise ConfigError(
                f"iid partition: {num_clients} clients but category {cat.name} has only "
                f"{n} train images (use fewer clients)"
            )
        base = np.full(num_clients, n // num_clients, dtype=np.int64)
        base[rng.permutation(num_clients)[: n % num_clients]] += 1
        return _deal(items, base, rng)
    # dirichlet
    with np.errstate(all="ignore"):
        p = rng.dirichlet(np.full(num_clients, alpha))
    if not np.all(np.isfinite(p)) or p.sum() <= 0:
        raise ConfigError(f"dirichlet partition: alpha {alpha} is too small to sample from")
    p = p / p.sum()
    return _deal(items, _largest_remainder(p * n, n, rng), rng)


def _fill_empty_clients(train: dict[str, list[list[str]]], num_clients: int) -> None:
    """Give every client at least one train image, moving it from the richest client."""
    order = {c: i for i, c in enumerate(sorted(train))}
    for client in range(num_clients):
        if any(train[cat][client] for cat in train):
            continue
        cat, donor = max(
            ((c, d) for c in train for d in range(num_clients)),
            key=lambda cd: (len(train[cd[0]][cd[1]]), -order[cd[0]], -cd[1]),
        )
        if len(train[cat][donor]) < 2:  # pragma: no cover - excluded by the count check
            raise ConfigError(f"cannot give client {client} a train image")
        moved = train[cat][donor].pop()
        train[cat][client].append(moved)
        log.debug("dirichlet partition: moved %s/%s to empty client %d", cat, moved, client)


def _split_test(
    cat: Category, train_counts: np.ndarray, rng: np.random.Generator
) -> list[list[str]]:
    """Test images of one category, split in proportion to the clients' train shares,
    stratified by defect type (largest-remainder rounding per defect type)."""
    shares = train_counts / train_counts.sum()
    by_defect: dict[str, list[str]] = {}
    for sample in cat.test:
        by_defect.setdefault(sample.defect, []).append(sample.rel_path)
    out: list[list[str]] = [[] for _ in train_counts]
    for defect in sorted(by_defect):
        items = by_defect[defect]
        counts = _largest_remainder(shares * len(items), len(items), rng)
        for client, part in enumerate(_deal(items, counts, rng)):
            out[client].extend(part)
    return [sorted(part) for part in out]


def _load_categories(
    data_root: str | Path, categories: Iterable[str] | None, layout: str
) -> list[Category]:
    root = Path(data_root)
    present = available_categories(root, layout)
    if categories is None:
        wanted = present
        if not wanted:
            raise DataError(
                f"no category under {root} (expected folders such as {root}/<name>/train/good "
                f"or {root}/<name>/good)"
            )
    else:
        wanted = sorted(set(categories))
        if not wanted:
            raise ConfigError("no categories to partition")
        absent = [c for c in wanted if c not in present]
        if absent:
            raise DataError(f"categories {', '.join(absent)} not found under {root}")
    return [load_category(root, name, layout) for name in wanted]


def _category_code(name: str) -> int:
    """A category's part of the partition's random seeds: AutoVI's categories keep the
    codes they always had (their place in the release), so that a partition of AutoVI
    data stays the one earlier runs drew; any other name gets one from its bytes."""
    if name in AUTOVI_SEED_ORDER:
        return AUTOVI_SEED_ORDER.index(name)
    return len(AUTOVI_SEED_ORDER) + zlib.crc32(name.encode())


def make_partition(
    data_root: str | Path,
    scheme: str,
    num_clients: int,
    alpha: float,
    seed: int,
    categories: Iterable[str] | None = None,
    *,
    layout: str,
    conf_dir: str | Path | None = None,
) -> Partition:
    """Split the categories present under ``data_root`` (all, or ``categories``) across
    ``num_clients`` clients; ``alpha`` is used by the ``dirichlet`` scheme only.

    The ``category`` scheme takes its lines from ``conf/partitions/category.yaml`` and
    needs exactly its number of clients. The same arguments and data give the same
    partition.
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown partition scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    if isinstance(num_clients, bool) or num_clients < 1:
        raise ConfigError(f"partition: number of clients must be >= 1, got {num_clients}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"partition: Dirichlet alpha must be > 0, got {alpha}")
    n_clients, seed, alpha = int(num_clients), int(seed), float(alpha)
    lines = load_lines(conf_dir) if scheme == "category" else None
    if lines is not None and n_clients != lines.num_clients:
        raise ConfigError(
            f"the category partition has exactly {lines.num_clients} clients (see "
            f"{lines.source}), got {n_clients}; use the iid or dirichlet scheme for another "
            "number of clients"
        )

    cats = _load_categories(data_root, categories, layout)
    total = sum(len(c.train) for c in cats)
    if scheme != "category" and n_clients > total:
        raise ConfigError(
            f"{scheme} partition: {n_clients} clients but only {total} train images in "
            f"{', '.join(c.name for c in cats)}"
        )

    def rng_for(cat: Category, purpose: int) -> np.random.Generator:
        key = [seed, _SCHEME_CODES[scheme], _category_code(cat.name), purpose]
        return np.random.default_rng(key)

    train = {c.name: _split_train(scheme, lines, c, n_clients, alpha, rng_for(c, 0)) for c in cats}
    if scheme == "dirichlet":
        _fill_empty_clients(train, n_clients)
    test = {}
    for c in cats:
        counts = np.array([len(part) for part in train[c.name]], dtype=np.float64)
        test[c.name] = _split_test(c, counts, rng_for(c, 1))

    shares = []
    for client in range(n_clients):
        tr = {c.name: sorted(train[c.name][client]) for c in cats if train[c.name][client]}
        te = {c.name: test[c.name][client] for c in cats if test[c.name][client]}
        shares.append(ClientShare(client, tr, te))
    partition = Partition(scheme, seed, shares)
    log.info(
        "%s partition (seed %d) of %s: %s train images per client",
        scheme,
        seed,
        data_root,
        [s.num_train for s in shares],
    )
    return partition


# --------------------------------------------------------------------------- CLI


def format_table(partition: Partition) -> str:
    """A readable table of per-client, per-category train and test counts."""
    header = f"{'client':>6}  {'category':<16} {'train':>6} {'test':>6} {'good':>6} {'defect':>6}"
    lines = [
        f"{partition.scheme} partition, seed {partition.seed}, {partition.num_clients} clients",
        header,
        "-" * len(header),
    ]
    for share in partition.clients:
        cats = sorted({*share.train, *share.test})
        if not cats:
            lines.append(f"{share.client:>6}  {'(no images)':<16}")
        for cat in cats:
            tr = len(share.train.get(cat, []))
            te = share.test.get(cat, [])
            good = sum(1 for p in te if p.startswith("test/good/"))
            lines.append(
                f"{share.client:>6}  {cat:<16} {tr:>6} {len(te):>6} {good:>6} {len(te) - good:>6}"
            )
    total_train = sum(s.num_train for s in partition.clients)
    total_test = sum(s.num_test for s in partition.clients)
    lines.append("-" * len(header))
    lines.append(f"{'all':>6}  {'':<16} {total_train:>6} {total_test:>6}")
    return "\n".join(lines)


def run_cli(args: argparse.Namespace) -> int:
    """`fedpatch partition`: print the partition as a table, or as JSON with ``--json``."""
    from fedpatch_app.commands import PARTITION
    from fedpatch_app.settings.options import option_values

    s = option_values(args, PARTITION.settings, PARTITION.flags)
    partition = make_partition(
        s["data_root"],
        s["partition"],
        s["num_clients"],
        s["dirichlet_alpha"],
        s["seed"],
        s["categories"],
        layout=s["layout"],
    )
    if args.json:
        print(json.dumps(partition.to_json(), indent=2))
    else:
        print(format_table(partition))
    return 0
