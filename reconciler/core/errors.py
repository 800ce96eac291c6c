"""
The error taxonomy.

Every failure the controller knows about is one of three kinds, and the kind decides what happens
next, never the message:

- ``ConfigError``: the user's settings or haproxy.cfg cannot be worked with. Nothing is changed;
  ``reconcile`` exits 2. Carries every problem found, so the user fixes them in one go.
- ``TransientError``: something outside us was briefly unavailable (AWS throttling, the HAProxy
  socket refused a connection, the file changed under us). The cycle is retried with backoff.
- ``PermanentError``: something outside us refused our change and retrying the same change will
  not help (``haproxy -c`` rejected the candidate file, the reload command failed). Logged; the
  next event or resync tries again.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base class: every error this package raises on purpose."""


class ConfigError(ReconcilerError):
    """
    The configuration cannot be used; *problems* lists each one as "where: what to do".
    """

    def __init__(self, problems: list[str] | tuple[str, ...], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(self.problems))


class TransientError(ReconcilerError):
    """A dependency was unavailable; the same cycle may succeed later."""


class PermanentError(ReconcilerError):
    """A dependency refused the change; retrying at once will not help."""
