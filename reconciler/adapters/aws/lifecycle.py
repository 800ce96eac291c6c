"""
The ``LifecycleApi`` adapter: completes Auto Scaling lifecycle actions, and keeps them alive.

CONTINUE and ABANDON become one ``CompleteLifecycleAction`` by instance id (the token is only in
the hook's notification, which the controller need not have seen). The planner asks again every
cycle for as long as AWS still reports the instance in its wait state, and AWS may keep reporting
it for a while after the completion (eventual consistency), so the adapter remembers what it
completed for ``remember_for`` seconds and does not send it twice. An action AWS no longer waits
for ("No active Lifecycle Action found": completed by someone else, or timed out) counts as done.

A HEARTBEAT action is the planner saying "this instance is still draining, for ``waited`` seconds,
and its hook times out after ``timeout``". ``RecordLifecycleActionHeartbeat`` restarts the hook's
timeout, so one every ``timeout / 2`` seconds keeps the instance waiting for as long as the drain
lasts; the adapter sends one only when it is due: the instance has waited at least half the
timeout and this process sent none for it in the last half timeout. ``waited`` is HAProxy's time
since the server's last state change, which restarts when a drain turns into maintenance, so the
adapter also counts from the first time it was asked about the instance and uses the longer of
the two. That state lives in memory only: a restarted controller sends at most one heartbeat more
than needed (at its first cycle, when the drain is already half a timeout old).

Failures raise ``TransientError`` (throttling, AWS trouble, no answer: the next cycle asks again)
or ``PermanentError`` (refused: a missing permission, a hook that does not exist), with advice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from reconciler.adapters.aws.classify import Cause, error_codes, explain
from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.model import LifecycleAction, LifecycleResult


if TYPE_CHECKING:
    from reconciler.adapters.aws.clients import AwsClients

COMPLETE = "autoscaling:CompleteLifecycleAction"
HEARTBEAT = "autoscaling:RecordLifecycleActionHeartbeat"
#: How long a completion is remembered: longer than AWS takes to show the instance's next state.
REMEMBER_SECONDS = 600.0
#: What AWS answers (with ``ValidationError``) when nothing waits for the action any more.
NOT_WAITING = "No active Lifecycle Action found"

_CALL_FAILURES = (ClientError, BotoCoreError, ResponseParserError)

#: One lifecycle action of one instance: group, instance id, hook name.
_Key = tuple[str, str, str]


@dataclass(frozen=True)
class _Wait:
    """What this process knows of one instance waiting on a terminate hook."""

    #: Clock time of the first heartbeat request for it, and of the latest.
    first_asked: float
    last_asked: float
    #: Clock time of the last heartbeat sent, ``None`` before the first.
    last_beat: float | None = None


class AwsLifecycle:
    """Completes lifecycle actions and records heartbeats through the Auto Scaling API."""

    def __init__(
        self,
        clients: AwsClients,
        *,
        clock: Callable[[], float] = time.monotonic,
        remember_for: float = REMEMBER_SECONDS,
    ) -> None:
        """
        Call through *clients*; *clock* (seconds, monotonic) times the memory: a completion is
        remembered for *remember_for* seconds, an instance's heartbeats until *remember_for*
        seconds after the last request about it.
        """
        self._autoscaling = clients.client("autoscaling")
        self._clock = clock
        self._remember_for = remember_for
        self._completed: dict[tuple[_Key, LifecycleResult], float] = {}
        self._waits: dict[_Key, _Wait] = {}

    def carry_out(self, action: LifecycleAction) -> bool:
        """
        Complete *action*, or record a heartbeat for it when one is due; True when an API call
        was made. Raise ``TransientError`` or ``PermanentError`` when the call failed.
        """
        now = self._clock()
        self._forget_before(now - self._remember_for)
        key = (action.group, action.instance_id, action.hook)
        if action.result is LifecycleResult.HEARTBEAT:
            return self._heartbeat(key, action, now)
        if (key, action.result) in self._completed:
            return False
        self._call(
            COMPLETE,
            action,
            lambda: self._autoscaling.complete_lifecycle_action(
                LifecycleHookName=action.hook,
                AutoScalingGroupName=action.group,
                LifecycleActionResult=action.result.value,
                InstanceId=action.instance_id,
            ),
        )
        self._completed[key, action.result] = now
        self._waits.pop(key, None)
        return True

    def _heartbeat(self, key: _Key, action: LifecycleAction, now: float) -> bool:
        wait = self._waits.get(key)
        wait = _Wait(now, now) if wait is None else replace(wait, last_asked=now)
        self._waits[key] = wait
        half = action.timeout / 2
        waited = max(action.waited, now - wait.first_asked)
        if waited < half or (wait.last_beat is not None and now - wait.last_beat < half):
            return False
        self._call(
            HEARTBEAT,
            action,
            lambda: self._autoscaling.record_lifecycle_action_heartbeat(
                LifecycleHookName=action.hook,
                AutoScalingGroupName=action.group,
                InstanceId=action.instance_id,
            ),
        )
        self._waits[key] = replace(wait, last_beat=now)
        return True

    @staticmethod
    def _call(iam_action: str, action: LifecycleAction, call: Callable[[], object]) -> None:
        """Make *call* for *action*; an action nobody waits for is done, a failure raises."""
        try:
            call()
        except _CALL_FAILURES as exc:
            if _not_waiting(exc):
                return
            found = explain(iam_action, exc)
            operation = iam_action.partition(":")[2]
            message = (
                f"{operation} of hook '{action.hook}' of '{action.group}' failed "
                f"({found.what}): {found.advice}"
            )
            if found.cause is Cause.TRANSIENT:
                raise TransientError(message) from exc
            raise PermanentError(message) from exc

    def _forget_before(self, horizon: float) -> None:
        """Drop completions made and waits last asked about before *horizon*: bounded memory."""
        self._completed = {k: t for k, t in self._completed.items() if t >= horizon}
        self._waits = {k: w for k, w in self._waits.items() if w.last_asked >= horizon}


def _not_waiting(exc: BaseException) -> bool:
    """AWS's answer for an action that was completed already or timed out."""
    return (
        isinstance(exc, ClientError)
        and "ValidationError" in error_codes(exc)
        and NOT_WAITING in exc.response.get("Error", {}).get("Message", "")
    )
