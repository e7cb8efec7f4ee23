"""The HTTP server's side of the service's limits: what uvicorn does not bound itself.

uvicorn times out an idle keep-alive connection (`timeout_keep_alive`), bounds the size of
a request's head (h11's `max_incomplete_event_size`) and can restart after a number of
requests, but it waits for the head of a request for ever: a client that connects and
sends nothing, or half a header line, holds a connection and a file descriptor for as
long as it likes. `header_timeout_protocol` is uvicorn's h11 protocol with that one piece
added: a connection that has no request in progress and has not sent a complete request
head within `seconds` of connecting (or of its previous answer) is closed. The body of a
request is timed by the service itself (`uploads.body_chunks`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; closes a connection whose request head does not arrive
    within `header_seconds`."""

    header_seconds = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_seconds, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_request() and not self.transport.is_closing():
            log.info("closing a connection that sent no request head in %g s", self.header_seconds)
            self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutH11Protocol]:
    """The protocol class to give uvicorn (`Config(http=...)`) for a head timeout."""
    return type("HeaderTimeoutH11", (HeaderTimeoutH11Protocol,), {"header_seconds": seconds})


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (each connection
    holds one); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
    return soft


def heap_trimmer() -> Callable[[], None] | None:
    """glibc's `malloc_trim(0)`, which hands the free memory of the heap back to the
    system, or None where it is not available. glibc keeps freed blocks below a
    threshold that grows to the largest block freed so far (up to 32 MB) for reuse, so
    after a burst of large uploads the service stays larger for good (50 to 70 MB after
    40 uploads of 18 MB at once); the service trims once it is idle. (Fixing the
    threshold instead, with mallopt, made scoring ~60% slower: thousands of page faults
    per image as torch's buffers were mapped afresh every time.)"""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        log.debug("malloc_trim is not available: freed upload buffers may stay resident")
        return None
    return lambda: trim(0) and None
