"""
A paced load generator: threads sending ``GET /`` through HAProxy's frontend at a fixed total
rate, each request on a new connection, every answer counted.

Paced rather than flat out: on a small machine, threads sending as fast as they can would take the
CPU the controller, HAProxy and the measuring thread need, and the latencies measured meanwhile
would be the load generator's. A request that gets no HTTP answer, or any status but 200, failed.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.haproxy import HAProxyProcess


#: Seconds a request may take before it counts as failed.
REQUEST_TIMEOUT = 5.0
#: Failures kept with their time, to tell which change caused them.
FAILURES_KEPT = 20


@dataclass
class LoadCount:
    """What the load generator saw."""

    requests: int = 0
    failed: int = 0
    #: Failures by kind: ``HTTP 503``, ``RemoteDisconnected``...
    kinds: Counter[str] = field(default_factory=Counter)
    #: The first failures: seconds since the start, the wall-clock time (to find them in the
    #: logs), the kind.
    first_failures: list[tuple[float, float, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The counts as a JSON object."""
        return {
            "requests": self.requests,
            "failed": self.failed,
            "failure_kinds": dict(self.kinds),
            "first_failures": [
                {"at": round(at, 3), "time": round(wall, 3), "kind": kind}
                for at, wall, kind in self.first_failures
            ],
            "seconds": round(self.seconds, 3),
            "rate_per_second": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
        }


class PacedLoad:
    """*threads* threads sending *rate* requests per second in all through *haproxy*."""

    def __init__(self, haproxy: HAProxyProcess, rate: float, threads: int = 4) -> None:
        """Nothing is sent before ``__enter__``."""
        self._haproxy = haproxy
        self._interval = threads / rate
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = 0.0
        self.count = LoadCount()
        self._threads = [
            threading.Thread(target=self._run, args=(n / rate,), name=f"load-{n}", daemon=True)
            for n in range(threads)
        ]

    def __enter__(self) -> PacedLoad:
        """Start sending."""
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop sending; wait for the answers in flight."""
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT + 1)
        self.count.seconds = time.monotonic() - self._started

    def _run(self, offset: float) -> None:
        due = self._started + offset
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            failure = self._one()
            with self._lock:
                self.count.requests += 1
                if failure is not None:
                    self.count.failed += 1
                    self.count.kinds[failure] += 1
                    if len(self.count.first_failures) < FAILURES_KEPT:
                        at = time.monotonic() - self._started
                        self.count.first_failures.append((at, time.time(), failure))
            # Falling behind (a slow answer) skips the missed slots instead of bursting.
            due = max(due + self._interval, time.monotonic())

    def _one(self) -> str | None:
        """Send one request; what went wrong, or ``None``."""
        try:
            status, _ = self._haproxy.get("/", timeout=REQUEST_TIMEOUT)
        except (OSError, http.client.HTTPException) as exc:
            return type(exc).__name__
        return None if status == 200 else f"HTTP {status}"
