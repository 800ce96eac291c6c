"""
Client load through HAProxy's frontend: threads sending requests in a loop, every answer recorded.

``Load(haproxy, paths)`` runs one thread per path from ``__enter__`` to ``stop`` (or the end of the
``with`` block), each on a new connection per request, or as a keep-alive client; ``hits`` are the
answers so far (``Hit``: path, start and end, status, body; status 0 for no HTTP answer at all).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from harness.haproxy import HAProxyProcess


#: Seconds ``stop`` waits for each thread's request in flight, slow ones included.
STOP_DEADLINE = 30.0


@dataclass(frozen=True)
class Hit:
    """One request sent through HAProxy and its answer (status 0: no HTTP answer at all)."""

    path: str
    started: float
    ended: float
    status: int
    body: str

    @property
    def instance(self) -> str:
        """The instance that answered, from the backend's ``hello from <id>``."""
        return self.body.strip().removeprefix("hello from ") if self.status == 200 else ""


class Load:
    """
    One thread per path, each sending its request in a loop until stopped: on a new connection
    each time, or as a keep-alive client reusing one connection (a new one after a failure).
    """

    def __init__(
        self, haproxy: HAProxyProcess, paths: Sequence[str], *, keep_alive: bool = False
    ) -> None:
        """Send through *haproxy*'s frontend; one thread for each of *paths*."""
        self._haproxy = haproxy
        self._keep_alive = keep_alive
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._hits: list[Hit] = []
        self._threads = [
            threading.Thread(target=self._run, args=(path,), name=f"load-{n}", daemon=True)
            for n, path in enumerate(paths)
        ]

    def __enter__(self) -> Load:
        """Start every thread."""
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop, letting the requests in flight finish."""
        self.stop()

    def stop(self) -> list[Hit]:
        """Stop sending, wait for the answers in flight; every hit."""
        self._stop.set()
        for thread in self._threads:
            thread.join(STOP_DEADLINE)
        return self.hits()

    def hits(self) -> list[Hit]:
        """The answers so far."""
        with self._lock:
            return list(self._hits)

    def _run(self, path: str) -> None:
        client: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if not self._keep_alive:
                    status, body = self._haproxy.get(path)
                else:
                    if client is None:
                        client = http.client.HTTPConnection("127.0.0.1", self._haproxy.port)
                    client.request("GET", path)
                    response = client.getresponse()
                    status, body = response.status, response.read().decode()
                    if response.will_close:
                        client.close()
                        client = None
            except (OSError, http.client.HTTPException) as exc:
                status, body = 0, repr(exc)
                if client is not None:
                    client.close()
                    client = None
            hit = Hit(path, started, time.monotonic(), status, body)
            with self._lock:
                self._hits.append(hit)
        if client is not None:
            client.close()
