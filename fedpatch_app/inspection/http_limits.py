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


#: glibc's mallopt parameter for the size from which allocations are mapped on their own.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def return_freed_buffers() -> bool:
    """Have glibc map every allocation of 128 KB or more on its own, so that freeing it
    gives the memory back to the system. By default glibc raises that threshold to the
    largest block freed so far (up to 32 MB), after which the buffers of large uploads come
    from the heap and stay resident once freed: 40 uploads of 18 MB at once left the
    service 50 to 70 MB larger for good. Returns whether it applied (glibc only)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        done = bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        done = False
    if not done:
        log.debug("mallopt is not available: freed upload buffers may stay resident")
    return done
