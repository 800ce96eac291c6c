"""
What ``bench.chaos`` does to AWS, to the notifications and to HAProxy's runtime API.

- ``RandomFaults``: a share of the controller's AWS calls fail, each with throttling or a 5xx,
  decided by a seeded RNG. Only requests signed with the controller's access key are hit: the
  harness's own calls (``Cloud``, made with another key) always get through, so the harness never
  has to tell an injected fault from a real one. It wraps each service's ``call_action`` in the
  moto server that runs in this process, one level above the per-operation handlers that
  ``Cloud.fail`` patches, so it also covers the lifecycle-action handlers ``Cloud`` installs.
- ``Courier``: the notifications the scaling events cause, delivered the way an unreliable queue
  delivers them: some dropped, some twice, each one late by a random delay (which shuffles their
  order), with malformed bodies and forged Spot warnings mixed in. Decisions are made by the
  caller's thread from a seeded RNG; a thread only sends what was decided, when it is due.
- ``RUNTIME_FAULTS``: what ``harness.faulty_socket.FaultyProxy``, between the controller
  and HAProxy's admin socket, does to a share of the commands: replies cut short (as when a
  reload cuts a connection), dumps missing their version line or their managed rows, a
  connection closed with no reply (the command run or not), refused commands, slow and trickling
  replies. Every fault is one a careful reader can tell from a whole, true reply; a byte changed
  inside a well-formed value is not, and is left out.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moto.autoscaling.exceptions import AutoscalingClientError
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, BaseResponse
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response
from moto.sqs.exceptions import SQSException
from moto.sqs.responses import SQSResponse

from bench.chaos_scenario import Forgery
from harness.faulty_socket import Close, Fault, Garble, Refuse, Slow, Trickle, Truncate
from harness.messages import lifecycle
from harness.stack import BACKEND, GROUP, HAND_WRITTEN, Notifications, spot_warning


#: The moto services the controller calls, with the error class each one serialises in its own
#: protocol (query XML for Auto Scaling and EC2, JSON for SQS).
_SERVICES: dict[type[BaseResponse], type[ServiceException]] = {
    AutoScalingResponse: AutoscalingClientError,
    EC2Response: EC2ClientError,
    SQSResponse: SQSException,
}
#: What an injected fault answers (AWS error code, HTTP status), drawn uniformly: throttling half
#: the time, an AWS-side failure otherwise. botocore and the controller retry all of them.
FAULTS = (
    ("Throttling", 400),
    ("Throttling", 400),
    ("InternalFailure", 500),
    ("ServiceUnavailable", 503),
)
#: What the faulty proxy does to a command it picks, drawn uniformly.
RUNTIME_FAULTS: tuple[Fault, ...] = (
    # The version line, the header and the first row: a connection cut during a reload.
    Truncate(lines=3),
    Truncate(size=200),
    Garble(rb"(?m)^1\n", b""),
    # Every managed row gone: twice in one cycle (both dumps), a consistent out-of-date read.
    Garble(rb"(?m)^.*api-i-.*\n", b""),
    Close(),
    Close(forward=True),
    Refuse("Permission denied"),
    Refuse("Already exists a server with the same name in backend."),
    Slow(1.0),
    # A dump of a few kB over a few seconds: within the controller's deadline.
    Trickle(0.001),
)
_ABSENT = object()
#: What a runtime command smuggled in a malformed warning would do: drain the hand-written server.
HAND_DRAIN = f"{BACKEND}/{HAND_WRITTEN.split()[0]} state drain"


class RandomFaults:
    """Fail each AWS call signed with one access key with a fixed probability."""

    def __init__(self, probability: float, seed: int, access_key: str) -> None:
        """Fail a *probability* share of the calls signed with *access_key*; *seed* the RNG."""
        self.probability = probability
        self._rng = random.Random(seed)
        self._credential = f"Credential={access_key}/"
        self._lock = threading.Lock()
        self._undo: list[tuple[type[BaseResponse], object]] = []
        #: Calls seen from that key and calls failed, by operation (``DescribeInstances``...).
        self.calls: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()

    def install(self) -> None:
        """Start failing calls."""
        for owner in _SERVICES:
            self._undo.append((owner, owner.__dict__.get("call_action", _ABSENT)))
            owner.call_action = self._wrap(owner, owner.call_action)  # type: ignore[method-assign]

    def remove(self) -> None:
        """Let every call through again."""
        while self._undo:
            owner, original = self._undo.pop()
            if original is _ABSENT:
                del owner.call_action
            else:
                owner.call_action = original  # type: ignore[method-assign, assignment]

    def _wrap(self, owner: type[BaseResponse], original: Callable[..., Any]) -> Callable[..., Any]:
        """*owner*'s ``call_action`` (*original*), failing the requests ``_draw`` picks."""
        error = _SERVICES[owner]

        def call_action(response: BaseResponse) -> Any:
            """Answer the request, or fail it in the service's own error format."""
            fault = self._draw(response)
            if fault is None:
                return original(response)
            code, status = fault
            _, headers, body = response.serialized(
                ActionResult(error(code, "injected by bench.chaos"))
            )
            return status, headers, body

        return call_action

    def _draw(self, response: BaseResponse) -> tuple[str, int] | None:
        """The fault for this request, or ``None`` to answer it; counts it either way."""
        if self._credential not in response.headers.get("Authorization", ""):
            return None
        operation = response._get_action()
        # One lock: the server answers in threads, and a seeded RNG must be drawn in some order.
        with self._lock:
            self.calls[operation] += 1
            if self._rng.random() >= self.probability:
                return None
            self.failed[operation] += 1
            return self._rng.choice(FAULTS)


@dataclass(order=True)
class _Delivery:
    """One message copy waiting for its time."""

    due: float
    #: Breaks ties in posting order, and counts deliveries that overtook an earlier post.
    posted: int
    send: Callable[[], None] = field(compare=False)


@dataclass
class CourierCounts:
    """What the courier did with the messages it was given."""

    #: Notifications the scaling events caused.
    notifications: int = 0
    dropped: int = 0
    duplicated: int = 0
    malformed: int = 0
    #: Copies sent to SNS or SQS.
    delivered: int = 0
    #: Copies delivered after a copy that was posted later.
    reordered: int = 0
    #: Copies the harness failed to send (moto refused them): not delivered.
    lost: int = 0
    #: Forged Spot warnings, by what they forge.
    forged: Counter[str] = field(default_factory=Counter)


class Courier:
    """Delivers notifications late, twice or never, with malformed bodies mixed in."""

    def __init__(
        self,
        queue: Notifications,
        rng: random.Random,
        *,
        drop: float,
        duplicate: float,
        max_delay: float,
        malformed: Sequence[str],
    ) -> None:
        """
        Post to *queue*: drop a *drop* share of the notifications, send a *duplicate* share of
        the others twice, delay every copy by up to *max_delay* seconds; *malformed* bodies are
        what ``junk`` picks from. *rng* decides all of it.
        """
        self._queue = queue
        self._rng = rng
        self._drop = drop
        self._duplicate = duplicate
        self._max_delay = max_delay
        self._malformed = malformed
        self._pending: list[_Delivery] = []
        self._posted = itertools.count()
        self._latest = -1
        self._wake = threading.Condition()
        self._stopping = False
        self._sending = False
        self._thread = threading.Thread(target=self._run, name="courier", daemon=True)
        self.counts = CourierCounts()

    def start(self) -> None:
        """Start delivering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop delivering; what is still waiting is never sent."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(10)

    def flush(self, timeout: float) -> bool:
        """Wait until every copy posted so far was sent; False after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._pending or self._sending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def scaling(self, event: str, instance_id: str) -> None:
        """An ``autoscaling:EC2_INSTANCE_<event>`` notification, published to the SNS topic."""
        self._notify(lambda: self._queue.publish(event, instance_id))

    def lifecycle(self, transition: str, hook: str, instance_id: str) -> None:
        """A lifecycle hook notification, sent straight to the queue (a hook aimed at SQS)."""
        body = json.dumps(
            lifecycle(
                LifecycleHookName=hook,
                LifecycleTransition=transition,
                AutoScalingGroupName=GROUP,
                EC2InstanceId=instance_id,
                # The controller completes actions by instance id, but AWS always sends one.
                LifecycleActionToken=str(uuid.UUID(int=self._rng.getrandbits(128))),
            )
        )
        self._notify(lambda: self._queue.send(body))

    def forge(self, forgery: Forgery, instance_id: str) -> None:
        """
        A Spot warning of kind *forgery* about *instance_id* (an id of no group for
        ``Forgery.UNKNOWN``: made up here), sent straight to the queue; never dropped.
        """
        if forgery is Forgery.UNKNOWN:
            instance_id = f"i-{self._rng.getrandbits(68):017x}"
        body = forged_warning(forgery, instance_id, self._rng)
        self.counts.forged[forgery.value] += 1
        self._post(lambda: self._queue.send(body))

    def junk(self) -> None:
        """One malformed body, sent straight to the queue; never dropped."""
        body = self._rng.choice(self._malformed)
        self.counts.malformed += 1
        self._post(lambda: self._queue.send(body))

    def _notify(self, send: Callable[[], None]) -> None:
        """Drop *send*, or post it once or twice."""
        self.counts.notifications += 1
        if self._rng.random() < self._drop:
            self.counts.dropped += 1
            return
        copies = 1
        if self._rng.random() < self._duplicate:
            self.counts.duplicated += 1
            copies = 2
        for _ in range(copies):
            self._post(send)

    def _post(self, send: Callable[[], None]) -> None:
        """Have *send* run after a random delay."""
        due = time.monotonic() + self._rng.uniform(0, self._max_delay)
        with self._wake:
            heapq.heappush(self._pending, _Delivery(due, next(self._posted), send))
            self._wake.notify()

    def _run(self) -> None:
        """The courier thread: send each copy when it is due, earliest first."""
        while True:
            with self._wake:
                while not self._stopping and (
                    not self._pending or self._pending[0].due > time.monotonic()
                ):
                    timeout = self._pending[0].due - time.monotonic() if self._pending else None
                    self._wake.wait(timeout)
                if self._stopping:
                    return
                delivery = heapq.heappop(self._pending)
                self._sending = True
            self._deliver(delivery)
            with self._wake:
                # flush() waits for this too: a copy only counts as gone once it was sent.
                self._sending = False
                self._wake.notify_all()

    def _deliver(self, delivery: _Delivery) -> None:
        """Send one copy; count it, and whether a later post overtook it."""
        try:
            delivery.send()
        # The harness's calls are never faulted; a failure here is moto's, and only counted.
        except Exception:
            self.counts.lost += 1
            return
        self.counts.delivered += 1
        if delivery.posted < self._latest:
            self.counts.reordered += 1
        self._latest = max(self._latest, delivery.posted)


def forged_warning(forgery: Forgery, instance_id: str, rng: random.Random) -> str:
    """
    The body of a forged warning about *instance_id*: EventBridge's own format, or for
    ``Forgery.MALFORMED`` one of ``malformed_warnings`` (*rng* picks which).
    """
    warning = spot_warning(instance_id)
    if forgery is Forgery.REBALANCE:
        warning["detail-type"] = "EC2 Instance Rebalance Recommendation"
        warning["detail"] = {"instance-id": instance_id}
    elif forgery is Forgery.MALFORMED:
        warning = rng.choice(malformed_warnings(warning, instance_id))
    return json.dumps(warning)


def malformed_warnings(warning: dict[str, Any], instance_id: str) -> list[dict[str, Any]]:
    """
    *warning* (about *instance_id*) made malformed in each way a forger or a broken sender
    might: each keeps the instance's id where a careless parser would still find it.
    """
    action = {"instance-action": "terminate"}
    sourceless = {k: v for k, v in warning.items() if k != "source"}
    return [
        {**warning, "source": "custom.forger"},
        sourceless,
        {**warning, "detail-type": "EC2 Spot Instance Interruption warning"},
        {**warning, "detail-type": ["EC2 Spot Instance Interruption Warning"]},
        {**warning, "detail": instance_id},
        {**warning, "detail": [{"instance-id": instance_id, **action}]},
        {**warning, "detail": {"instance-id": 42, **action}},
        {**warning, "detail": {"instance-id": f" {instance_id}", **action}},
        {**warning, "detail": {"instance-id": instance_id.upper(), **action}},
        # A runtime command smuggled in the id: it would drain the hand-written server.
        {**warning, "detail": {"instance-id": f"{instance_id}\nset server {HAND_DRAIN}", **action}},
    ]
