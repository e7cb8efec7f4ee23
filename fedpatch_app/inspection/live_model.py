"""The model a running service scores with, reloaded and rolled back without a restart.

`reload` loads the model folder again from where the service was told to find it (an
operator puts the new model there: see docs/deployment.md), verifies it exactly as at
start-up (signature when trusted keys are configured, every bank file, every field of
model.json) and warms it up on a grey image of each category; only a model that passes
all of that replaces the current one, which serves every request until that moment. The
model it replaced is kept, so `rollback` returns to it at once. A request keeps the model
it started with to its end.

The scoring gate bounds the requests past the door: `slots` scored at once and `queue`
waiting (reading their upload or waiting for a slot); one more is refused at once with
503 before its body is read. The probes never pass the gate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpatch_app.inspection.scorer import Scorer

log = logging.getLogger(__name__)


class ReloadError(Exception):
    """A reload or rollback that did not happen; the current model serves on."""


@dataclass(frozen=True)
class ModelSource:
    """Where the service's model comes from and how it is checked and run."""

    path: Path
    device: str = "auto"
    slots: int = 1
    allow_incomplete: bool = False
    trusted_keys: tuple[Any, ...] = ()
    runtime: str = "auto"

    def load(self) -> Scorer:
        from fedpatch_app.inspection.model_folder import load_model

        model = load_model(
            self.path, allow_incomplete=self.allow_incomplete, trusted_keys=self.trusted_keys
        )
        return Scorer.load(model, device=self.device, slots=self.slots, runtime=self.runtime)


class GateFull(Exception):
    """Every scoring slot and queue place is taken."""


@dataclass
class ScoringGate:
    """`slots` + `queue` requests past the door at once (event-loop side, no lock)."""

    slots: int = 1
    queue: int = 8
    admitted: int = 0
    refused: int = 0

    @property
    def capacity(self) -> int:
        return self.slots + self.queue

    @contextmanager
    def enter(self) -> Iterator[None]:
        if self.admitted >= self.capacity:
            self.refused += 1
            raise GateFull
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    def state(self) -> dict[str, int]:
        return {"slots": self.slots, "queue": self.queue, "in_flight": self.admitted}


@dataclass
class LiveModel:
    """The current scorer, the previous one, and how to swap them."""

    current: Scorer
    source: ModelSource | None = None
    previous: Scorer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reload(self) -> Scorer:
        """Load, verify and warm up the model folder again; swap it in (blocking: call it
        off the event loop). ReloadError, the current model kept, when it fails."""
        if self.source is None:
            raise ReloadError("this service was started without a model folder to reload")
        if not self._lock.acquire(blocking=False):
            raise ReloadError("a reload or rollback is already running")
        try:
            try:
                new = self.source.load()
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old model
                raise ReloadError(f"the new model was refused: {exc}") from None
            new.warm_up()
            if not new.ready.is_set():
                new.close()
                raise ReloadError(f"the new model was refused: {new.warm_up_error}")
            self._swap(new)
            log.info("model reloaded: %s serves now", new.model.fingerprint)
            return new
        finally:
            self._lock.release()

    def rollback(self) -> Scorer:
        """Back to the model the last reload replaced (and that one becomes previous)."""
        with self._lock:
            if self.previous is None:
                raise ReloadError("there is no previous model to roll back to")
            self.current, self.previous = self.previous, self.current
            log.info("model rolled back: %s serves now", self.current.model.fingerprint)
            return self.current

    def _swap(self, new: Scorer) -> None:
        retired = self.previous
        self.previous, self.current = self.current, new
        if retired is not None:
            retired.retire()

    def describe(self, scorer: Scorer) -> dict[str, Any]:
        manifest = scorer.model.manifest
        return {
            "model": scorer.model.fingerprint,
            "model_sha256": scorer.model.manifest_sha256,
            "run_name": manifest.get("provenance", {}).get("run_name"),
            "categories": sorted(scorer.model.categories),
        }
