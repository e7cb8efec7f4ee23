"""Typed, validated settings of a federated run, read once from the Flower run config.

The run config is `[tool.flwr.app.config]` in pyproject.toml merged with `flwr run
--run-config "key=value ..."`. `RunSettings.from_run_config` checks every key and raises
`ConfigError` naming the key at fault; nothing else in the project reads the raw dict.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fedpatch_app.errors import ConfigError

log = logging.getLogger(__name__)

DATASETS = ("synthetic", "autovi", "auto")
PARTITIONS = ("category", "iid", "dirichlet")
SYNTHETIC_SCALES = ("tiny", "small")
TRANSPORT_DTYPES = ("float32", "float16")
BANK_BUDGETS = ("volume", "equal", "sqrt")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _key(name: str) -> str:
    """Run-config key of a dataclass field (`coreset_ratio` -> `coreset-ratio`)."""
    return name.replace("_", "-")


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"run config '{key}': expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"run config '{key}': expected an integer, got {value!r}")


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"run config '{key}': expected a number, got {value!r}")
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise ConfigError(f"run config '{key}': expected a number, got {value!r}") from None
    else:
        raise ConfigError(f"run config '{key}': expected a number, got {value!r}")
    if not math.isfinite(out):
        raise ConfigError(f"run config '{key}': expected a finite number, got {value!r}")
    return out


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ConfigError(f"run config '{key}': expected true or false, got {value!r}")


def _as_str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"run config '{key}': expected a string, got {value!r}")
    return value.strip()


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    text = _as_str(key, value).lower()
    if text not in choices:
        raise ConfigError(
            f"run config '{key}': expected one of {', '.join(choices)}, got {value!r}"
        )
    return text


def parse_categories(key: str, value: Any) -> tuple[str, ...] | None:
    """Categories from a string ("" = all; names separated by commas or spaces) or a list."""
    from fedpatch_app.data.autovi import CATEGORIES

    if value is None:
        return None
    if isinstance(value, str):
        names = [n for n in re.split(r"[,\s]+", value.strip()) if n]
    elif isinstance(value, list | tuple) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value if n.strip()]
    else:
        raise ConfigError(f"run config '{key}': expected category names, got {value!r}")
    if not names:
        return None
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        raise ConfigError(
            f"run config '{key}': unknown categories {', '.join(unknown)} "
            f"(known: {', '.join(CATEGORIES)})"
        )
    # Keep the fixed category order, drop duplicates.
    return tuple(c for c in CATEGORIES if c in names)


@dataclass(frozen=True)
class RunSettings:
    """Every setting of a federated run, typed and checked (run-config key in brackets).

    dataset ("dataset"): "autovi" (real data at data-root, never replaced), "synthetic"
    (the built-in generator) or "auto" (AutoVI if data-root holds it, else synthetic).
    """

    dataset: str = "auto"
    data_root: Path = Path("data/autovi")
    partition: str = "category"
    dirichlet_alpha: float = 0.5
    num_clients: int = 5
    weights: str = "imagenet"
    coreset_ratio: float = 0.1
    local_oversample: float = 2.0
    image_size: int = 256
    min_clients: int = 5
    seed: int = 0
    out_dir: Path = Path("runs")
    device: str = "auto"
    run_name: str = ""
    categories: tuple[str, ...] | None = None
    synthetic_scale: str = "tiny"
    transport_dtype: str = "float32"
    write_maps: bool = False
    batch_size: int = 8
    round_timeout: float = 3600.0
    wait_timeout: float = 300.0
    max_coreset_rows: int = 1_000_000
    dp_epsilon: float = 0.0
    dp_delta: float = 1e-5
    dp_clip: float = 0.0
    dp_centres: int = 128
    dp_clusters_per_image: int = 8
    dp_public_images: int = 8
    dp_public_seed: int = 1_000_003
    dp_public_root: str = ""
    bank_budget: str = "volume"
    unknown_keys: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The run-config keys this class reads."""
        return tuple(_key(f.name) for f in fields(cls) if f.name != "unknown_keys")

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> RunSettings:
        """Parse and check a run config; `ConfigError` names the first key at fault.

        Missing keys take the defaults above; unknown keys are kept in `unknown_keys`
        (and logged), so that a typo does not pass silently.
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"run config: expected a mapping, got {type(config).__name__}")
        known = set(cls.keys())
        unknown = tuple(sorted(k for k in config if k not in known))
        if unknown:
            log.warning("run config: ignoring unknown keys %s", ", ".join(unknown))
        defaults = cls()

        def get(name: str) -> Any:
            return config.get(_key(name), getattr(defaults, name))

        values: dict[str, Any] = {}
        values["dataset"] = _choice("dataset", get("dataset"), DATASETS)
        values["data_root"] = Path(_as_str("data-root", str(get("data_root"))) or ".")
        values["partition"] = _choice("partition", get("partition"), PARTITIONS)
        values["dirichlet_alpha"] = _as_float("dirichlet-alpha", get("dirichlet_alpha"))
        values["num_clients"] = _as_int("num-clients", get("num_clients"))
        values["weights"] = _as_str("weights", get("weights"))
        values["coreset_ratio"] = _as_float("coreset-ratio", get("coreset_ratio"))
        values["local_oversample"] = _as_float("local-oversample", get("local_oversample"))
        values["image_size"] = _as_int("image-size", get("image_size"))
        values["min_clients"] = _as_int("min-clients", get("min_clients"))
        values["seed"] = _as_int("seed", get("seed"))
        values["out_dir"] = Path(_as_str("out-dir", str(get("out_dir"))) or ".")
        values["device"] = _as_str("device", get("device")).lower()
        values["run_name"] = _as_str("run-name", get("run_name"))
        values["categories"] = parse_categories("categories", config.get("categories"))
        values["synthetic_scale"] = _choice(
            "synthetic-scale", get("synthetic_scale"), SYNTHETIC_SCALES
        )
        values["transport_dtype"] = _choice(
            "transport-dtype", get("transport_dtype"), TRANSPORT_DTYPES
        )
        values["write_maps"] = _as_bool("write-maps", get("write_maps"))
        values["batch_size"] = _as_int("batch-size", get("batch_size"))
        values["round_timeout"] = _as_float("round-timeout", get("round_timeout"))
        values["wait_timeout"] = _as_float("wait-timeout", get("wait_timeout"))
        values["max_coreset_rows"] = _as_int("max-coreset-rows", get("max_coreset_rows"))
        for name in ("dp_epsilon", "dp_delta", "dp_clip"):
            values[name] = _as_float(_key(name), get(name))
        for name in ("dp_centres", "dp_clusters_per_image", "dp_public_images", "dp_public_seed"):
            values[name] = _as_int(_key(name), get(name))
        values["dp_public_root"] = _as_str("dp-public-root", get("dp_public_root"))
        values["bank_budget"] = _choice("bank-budget", get("bank_budget"), BANK_BUDGETS)
        settings = cls(**values, unknown_keys=unknown)
        settings.check()
        return settings

    def check(self) -> None:
        """Range checks; `ConfigError` names the key."""
        if self.num_clients < 1:
            raise ConfigError(f"run config 'num-clients': must be >= 1, got {self.num_clients}")
        if not 1 <= self.min_clients <= self.num_clients:
            raise ConfigError(
                f"run config 'min-clients': must be between 1 and num-clients "
                f"({self.num_clients}), got {self.min_clients}"
            )
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ConfigError(
                f"run config 'coreset-ratio': must be in (0, 1], got {self.coreset_ratio}"
            )
        if self.local_oversample < 1.0:
            raise ConfigError(
                f"run config 'local-oversample': must be >= 1, got {self.local_oversample}"
            )
        if self.dirichlet_alpha <= 0.0:
            raise ConfigError(
                f"run config 'dirichlet-alpha': must be > 0, got {self.dirichlet_alpha}"
            )
        if not 32 <= self.image_size <= 2048:
            raise ConfigError(
                f"run config 'image-size': must be between 32 and 2048, got {self.image_size}"
            )
        if not self.weights:
            raise ConfigError(
                "run config 'weights': must be 'imagenet', 'none' or a weights file path"
            )
        if not _DEVICE_RE.match(self.device):
            raise ConfigError(
                f"run config 'device': expected auto, cpu, mps, cuda or cuda:N, got {self.device!r}"
            )
        if self.run_name and not _RUN_NAME_RE.match(self.run_name):
            raise ConfigError(
                f"run config 'run-name': letters, digits, '.', '_' and '-' only "
                f"(at most 100 characters), got {self.run_name!r}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"run config 'batch-size': must be >= 1, got {self.batch_size}")
        if self.round_timeout <= 0:
            raise ConfigError(
                f"run config 'round-timeout': must be > 0 seconds, got {self.round_timeout}"
            )
        if self.wait_timeout < 0:
            raise ConfigError(
                f"run config 'wait-timeout': must be >= 0 seconds, got {self.wait_timeout}"
            )
        if self.max_coreset_rows < 1:
            raise ConfigError(
                f"run config 'max-coreset-rows': must be >= 1, got {self.max_coreset_rows}"
            )

        self.dp_config().check()
        if (
            self.dp_epsilon > 0
            and self.dataset != "autovi"
            and not self.dp_public_root
            and self.dp_public_seed == self.seed
        ):
            raise ConfigError(
                "run config 'dp-public-seed': must differ from 'seed', which seeds the "
                "synthetic data (the public reference must not be the private data)"
            )

    def dp_config(self) -> Any:
        """The differential-privacy settings (`fedpatch_app.model.dp.DPConfig`)."""
        from fedpatch_app.model.dp import DPConfig

        return DPConfig.of(self)

    def resolved_run_name(self, stamp: str) -> str:
        """The run folder's name: `run-name`, or `federated-<partition>-<stamp>`."""
        return self.run_name or f"federated-{self.partition}-{stamp}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (paths as strings, categories as a list), keyed by run-config key."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if name == "unknown_keys":
                continue
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[_key(name)] = value
        return out
