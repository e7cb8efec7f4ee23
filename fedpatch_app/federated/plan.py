"""The run plan: the server's decisions, sent with every instruction to the clients."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord

from fedpatch_app.errors import ConfigError, ModelError
from fedpatch_app.federated.wire import typed
from fedpatch_app.model.embedding import FeatureSpec
from fedpatch_app.settings import RunSettings, from_run_config, to_run_config


@dataclass(frozen=True)
class Plan:
    """The server's decisions for a run, sent with every instruction.

    `settings` are the run's settings (they travel as one JSON object in run-config form
    and are validated by the same schema on arrival); `spec` is the FeatureSpec every
    client must use; `dataset`, `data_root` and `categories` are what the server resolved
    (clients with their own `data-root` in the node config use theirs; no categories: those
    the clients hold). `sizes` is each category's agreed size (width, height): every client
    scores its images at it, so that all give one patch grid per category. The server
    fixes it from the data when it sees them (the first training image of each category),
    else from the clients' train replies (the size most of them declare).
    """

    settings: RunSettings
    spec: FeatureSpec
    dataset: str
    data_root: str
    categories: tuple[str, ...]
    run_key: str
    maps_dir: str = ""
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    def to_config(self, **extra: Any) -> ConfigRecord:
        record = ConfigRecord(
            {
                "settings": json.dumps(to_run_config(self.settings), sort_keys=True),
                "spec": json.dumps(self.spec.to_dict(), sort_keys=True),
                "fingerprint": self.fingerprint,
                "dataset": self.dataset,
                "data-root": self.data_root,
                "categories": ",".join(self.categories),
                "run-key": self.run_key,
                "maps-dir": self.maps_dir,
                "sizes": json.dumps({c: list(s) for c, s in sorted(self.sizes.items())}),
            }
        )
        for key, value in extra.items():
            record[key] = value
        return record

    @classmethod
    def from_config(cls, record: ConfigRecord) -> Plan:
        """Read the plan from an instruction; `ModelError` if a field is missing, mistyped,
        or the feature spec does not match its fingerprint."""
        try:
            settings = from_run_config(
                json.loads(typed(record, "settings", str)), where="plan from the server"
            )
            spec = FeatureSpec.from_dict(json.loads(typed(record, "spec", str)))
            cats = typed(record, "categories", str)
            plan = cls(
                settings=settings,
                spec=spec,
                dataset=typed(record, "dataset", str),
                data_root=typed(record, "data-root", str),
                categories=tuple(c for c in cats.split(",") if c),
                run_key=typed(record, "run-key", str),
                maps_dir=typed(record, "maps-dir", str),
                sizes=parse_sizes(json.loads(typed(record, "sizes", str))),
            )
            expected = typed(record, "fingerprint", str)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelError(f"instruction from the server has a bad plan: {exc}") from None
        if plan.fingerprint != expected:
            raise ModelError(
                f"feature spec from the server does not match its fingerprint "
                f"({plan.fingerprint} != {expected})"
            )
        return plan


def parse_sizes(data: Any) -> dict[str, tuple[int, int]]:
    """Category sizes from their JSON form ({"cat": [width, height]}); ValueError if bad."""
    from fedpatch_app.data.layouts import NAME_RULE

    if not isinstance(data, dict):
        raise ValueError("sizes: expected an object of category: [width, height]")
    out = {}
    for cat, size in data.items():
        ok = isinstance(size, list) and len(size) == 2
        if not (NAME_RULE.match(str(cat)) and ok and all(_side(v) for v in size)):
            raise ValueError(f"sizes: bad entry {cat!r}: {size!r}")
        out[str(cat)] = (int(size[0]), int(size[1]))
    return out


def _side(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


class AnyCategory(tuple):
    """The categories of a run that names none: any valid category name is one."""

    def __contains__(self, name: object) -> bool:
        from fedpatch_app.data.layouts import NAME_RULE

        return isinstance(name, str) and NAME_RULE.match(name) is not None


def known_names(plan: Plan) -> tuple[str, ...]:
    """The categories a message of this run may name: the plan's, or any valid name."""
    return plan.categories or AnyCategory()
