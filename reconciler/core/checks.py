"""
What ``reconcile check`` reports: one row per thing it looked at, each with a verdict and, when
it did not pass, what to do about it. Pure.

The checks themselves are judged where their facts are understood (the settings, the file, the
runtime socket, AWS); this module holds only the row, the verdicts and how a whole run of rows
ends (its exit code and JSON form), so every area reports the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Verdict(enum.Enum):
    """How a check ended. Only ``FAIL`` makes the run fail."""

    OK = "ok"
    WARN = "warning"
    FAIL = "fail"
    #: Not checked: not configured, or a check it depends on failed (``detail`` says which).
    SKIP = "skipped"


@dataclass(frozen=True, slots=True)
class Check:
    """
    One row: *area* groups the rows (``settings``, ``haproxy.cfg``, ``runtime socket``, ``aws``,
    ``queue``, ``hooks``, ``listener``); *subject* names what was checked, *detail* what was
    found, *fix* what to do when it did not pass (empty when it passed).
    """

    area: str
    subject: str
    verdict: Verdict
    detail: str = ""
    fix: str = ""


def exit_code(checks: Iterable[Check]) -> int:
    """0 when no check failed (warnings and skips included), 1 otherwise."""
    return 1 if any(c.verdict is Verdict.FAIL for c in checks) else 0


def to_json(checks: Iterable[Check]) -> Mapping[str, object]:
    """The rows as ``reconcile check --json`` prints them."""
    rows = list(checks)
    return {
        "ok": exit_code(rows) == 0,
        "checks": [
            {
                "area": c.area,
                "subject": c.subject,
                "verdict": c.verdict.value,
                "detail": c.detail,
                "fix": c.fix,
            }
            for c in rows
        ],
    }
