"""The production lines of the ``category`` partition (`conf/partitions/category.yaml`),
read and checked.

The file maps lines only: which client owns which categories, and the mixed QC client that
holds a share of every category. The schemes' numbers (clients, Dirichlet alpha, seed) are
run settings, defined once in the settings schema. Read with `yaml.safe_load`; every key is
typed and range-checked, and a bad file is a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedpatch_app.data.layouts import NAME_RULE
from fedpatch_app.errors import ConfigError
from fedpatch_app.settings.fields import BY_NAME

#: The partition schemes: the `partition` setting's choices.
SCHEMES: tuple[str, ...] = BY_NAME["partition"].choices or ()
#: Where the line mapping lives.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "partitions"
LINES_FILE = "category.yaml"


@dataclass(frozen=True)
class LineClient:
    """A client of the ``category`` scheme that owns whole categories."""

    client: int
    name: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class MixedQC:
    """The ``category`` scheme's client holding a fraction of every category."""

    client: int
    name: str
    fraction: float
    min_per_category: int


@dataclass(frozen=True)
class LineMap:
    """The ``category`` scheme's clients, from ``conf/partitions/category.yaml``."""

    lines: tuple[LineClient, ...]
    mixed_qc: MixedQC
    source: Path

    @property
    def num_clients(self) -> int:
        """The lines and the mixed QC client: the scheme's exact number of clients."""
        return len(self.lines) + 1

    def owner(self, category: str) -> int:
        """The line client of a category: the one the file names, else one chosen by the
        name alone (the same on every machine), so that any category has a line."""
        for line in self.lines:
            if category in line.categories:
                return line.client
        return self.lines[zlib.crc32(category.encode()) % len(self.lines)].client


def _int(where: str, key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: '{key}' must be >= {minimum}, got {value}")
    return value


def _float(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
    return float(value)


def load_lines(conf_dir: str | Path | None = None) -> LineMap:
    """Read and validate ``<conf_dir>/category.yaml``; `ConfigError` names the file at fault."""
    path = Path(conf_dir if conf_dir is not None else CONF_DIR) / LINES_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"partition lines {path} not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read partition lines {path}: {exc}") from exc
    where = str(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with 'clients' and 'mixed_qc'")
    unknown = sorted(set(raw) - {"clients", "mixed_qc"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {', '.join(map(str, unknown))} (the file maps lines "
            "only: clients, mixed_qc; numbers of clients, alpha and seed are run settings)"
        )
    lines, qc = _category_clients(where, raw)
    ids = sorted([line.client for line in lines] + [qc.client])
    if ids != list(range(len(ids))):
        raise ConfigError(
            f"{where}: the clients and mixed_qc must be numbered 0..{len(ids) - 1}, got {ids}"
        )
    return LineMap(tuple(lines), qc, path)


def _category_clients(where: str, raw: dict[str, Any]) -> tuple[list[LineClient], MixedQC]:
    clients = raw.get("clients")
    if not isinstance(clients, list) or not clients:
        raise ConfigError(f"{where}: 'clients' must be a non-empty list")
    lines = []
    owner: dict[str, int] = {}
    for i, entry in enumerate(clients):
        w = f"{where}: clients[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{w}: expected a mapping with 'client' and 'categories'")
        cid = _int(w, "client", entry.get("client"), minimum=0)
        cats = entry.get("categories")
        if not isinstance(cats, list) or not cats:
            raise ConfigError(f"{w}: 'categories' must be a non-empty list")
        for cat in cats:
            if not isinstance(cat, str) or not NAME_RULE.match(cat):
                raise ConfigError(f"{w}: {cat!r} is not a category name")
            if cat in owner:
                raise ConfigError(f"{w}: category {cat} is already assigned to client {owner[cat]}")
            owner[cat] = cid
        lines.append(LineClient(cid, str(entry.get("name", f"client {cid}")), tuple(cats)))
    qc = raw.get("mixed_qc")
    if not isinstance(qc, dict):
        raise ConfigError(f"{where}: 'mixed_qc' must be a mapping (client, fraction)")
    w = f"{where}: mixed_qc"
    cid = _int(w, "client", qc.get("client"), minimum=0)
    fraction = _float(w, "fraction", qc.get("fraction"))
    if not 0 < fraction < 1:
        raise ConfigError(f"{w}: 'fraction' must be in (0, 1), got {fraction}")
    min_per = _int(w, "min_per_category", qc.get("min_per_category", 1), minimum=0)
    return lines, MixedQC(cid, str(qc.get("name", "mixed QC")), fraction, min_per)


# --------------------------------------------------------------------------- splitting
