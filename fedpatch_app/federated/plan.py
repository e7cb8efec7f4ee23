"""The run plan: the server's decisions, sent with every instruction to the clients."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    (clients with their own `data-root` in the node config use theirs).
    """

    settings: RunSettings
    spec: FeatureSpec
    dataset: str
    data_root: str
    categories: tuple[str, ...]
    run_key: str
    maps_dir: str = ""

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
