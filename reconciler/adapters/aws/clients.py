"""
botocore clients, all built the same way, and a counter of the calls they make.

Every client gets botocore's ``standard`` retry mode with a bounded number of attempts: the call
level of the two retry levels (see ``reconciler.retry``). Both are pinned in the client's config,
which wins over ``AWS_RETRY_MODE``, ``AWS_MAX_ATTEMPTS`` and the shared config file: the default
mode differs between botocore versions, and an environment must not unbound the retries or stack
a second policy on the cycle's. Clients also get explicit connect and read timeouts,
and the endpoint from the standard chain only: botocore itself honours ``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_<SERVICE>`` and ``endpoint_url`` in the shared config file, which is how tests
and local emulators are reached without any setting of ours.

``ApiCallCounter`` is hooked into every client through botocore's event system, so it sees each
API call, each retry botocore makes behind our back, and each call that finally failed. Its
snapshots feed the Prometheus metrics and the per-cycle log line.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, overload

import botocore.session
from botocore.config import Config

from reconciler.core.errors import ConfigError


if TYPE_CHECKING:
    from botocore.awsrequest import AWSResponse
    from botocore.client import BaseClient
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

#: botocore counts the first try, so 3 means two retries (its standard-mode default), each after
#: a random wait of up to 1 s, then up to 2 s: a throttled call gives up within about 3 s.
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Must exceed the longest SQS long poll (20 s), or every empty poll would end in a read timeout.
DEFAULT_READ_TIMEOUT = 30.0

#: ``sts``, ``sns`` and ``events`` are read by ``reconcile check`` only (``probes``).
Service = Literal["autoscaling", "ec2", "sqs", "sns", "sts", "events"]


@dataclass(frozen=True)
class CallCounts:
    """How one API operation fared: calls made, retries botocore added, calls that failed."""

    calls: int = 0
    #: HTTP attempts beyond the first, summed over all calls (botocore's own retries).
    retries: int = 0
    #: Calls that ended in an error after botocore's retries (error reply or no reply at all).
    errors: int = 0

    def __add__(self, other: CallCounts) -> CallCounts:
        """The field-wise sum."""
        return CallCounts(
            calls=self.calls + other.calls,
            retries=self.retries + other.retries,
            errors=self.errors + other.errors,
        )


class ApiCallCounter:
    """
    Thread-safe per-operation counts of AWS API calls, fed by botocore event hooks.

    Operations are keyed like IAM actions, ``<service>:<Operation>`` (for example
    ``ec2:DescribeInstances``), which keeps them unique across services and tells an operator
    which permission a failing call needs. The counts only grow; a consumer that wants per-cycle
    figures subtracts two snapshots.
    """

    def __init__(self) -> None:
        """Start with no operation counted."""
        self._lock = threading.Lock()
        self._counts: dict[str, CallCounts] = {}

    def snapshot(self) -> Mapping[str, CallCounts]:
        """An immutable copy of the counts so far, by operation."""
        with self._lock:
            return MappingProxyType(dict(self._counts))

    def attach(self, client: BaseClient, service: str) -> None:
        """Count every call *client* makes under the IAM prefix *service*."""
        service_id = client.meta.service_model.service_id.hyphenize()
        events = client.meta.events
        events.register(f"before-call.{service_id}", functools.partial(self._on_call, service))
        events.register(
            f"response-received.{service_id}", functools.partial(self._on_attempt, service)
        )
        events.register(f"after-call.{service_id}", functools.partial(self._on_reply, service))
        events.register(
            f"after-call-error.{service_id}", functools.partial(self._on_no_reply, service)
        )

    def _add(self, service: str, event_name: str, counts: CallCounts) -> None:
        # Event names end with the operation: ``before-call.ec2.DescribeInstances``.
        key = f"{service}:{event_name.rsplit('.', 1)[-1]}"
        with self._lock:
            self._counts[key] = self._counts.get(key, CallCounts()) + counts

    # botocore passes handlers keyword arguments only, and takes a handler's non-None return
    # value as the answer to the event, so each returns None and ignores what it does not need.

    def _on_call(self, service: str, *, event_name: str, **_: object) -> None:
        self._add(service, event_name, CallCounts(calls=1))

    def _on_attempt(
        self, service: str, *, event_name: str, context: Mapping[str, object], **_: object
    ) -> None:
        retries = context.get("retries")
        if isinstance(retries, Mapping) and retries.get("attempt", 1) > 1:
            self._add(service, event_name, CallCounts(retries=1))

    def _on_reply(
        self, service: str, *, event_name: str, http_response: AWSResponse, **_: object
    ) -> None:
        if http_response.status_code >= 300:
            self._add(service, event_name, CallCounts(errors=1))

    def _on_no_reply(self, service: str, *, event_name: str, **_: object) -> None:
        self._add(service, event_name, CallCounts(errors=1))


class AwsClients:
    """Builds (once per service) the botocore clients the controller uses; counts their calls."""

    def __init__(
        self,
        region: str | None = None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        """
        Resolve the region: *region* (``[aws] region``), else ``AWS_REGION``, else botocore's
        chain (``AWS_DEFAULT_REGION``, the profile). Raise ``ConfigError`` when none is found.
        """
        # botocore ignores AWS_REGION, which other SDKs and AWS runtimes (Lambda, ECS) set.
        # botocore's session, not boto3's: boto3 adds only resources, which the controller does
        # not use, and 3 MB of resident memory for their modules.
        session = botocore.session.get_session()
        chosen = region or os.environ.get("AWS_REGION")
        if chosen:
            session.set_config_variable("region", chosen)
        found: str | None = session.get_config_variable("region")
        if not found:
            msg = "aws.region: no AWS region found; set [aws] region or AWS_REGION"
            raise ConfigError([msg])
        self.region: str = found
        #: Where the region came from, for ``reconcile check``.
        self.region_source = _region_source(region)
        self.calls = ApiCallCounter()
        self._session = session
        self._config = Config(
            region_name=self.region,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        # botocore sessions are not thread-safe; the clients they make are.
        self._lock = threading.Lock()
        self._clients: dict[str, BaseClient] = {}

    @overload
    def client(self, service: Literal["autoscaling"]) -> AutoScalingClient: ...
    @overload
    def client(self, service: Literal["ec2"]) -> EC2Client: ...
    @overload
    def client(self, service: Literal["sqs"]) -> SQSClient: ...
    @overload
    def client(self, service: Literal["sns"]) -> SNSClient: ...
    @overload
    def client(self, service: Literal["sts", "events"]) -> BaseClient: ...
    def client(self, service: Service) -> BaseClient:
        """The client for *service*, created on first use with the shared config and counter."""
        with self._lock:
            made = self._clients.get(service)
            if made is None:
                made = self._session.create_client(service, config=self._config)
                self.calls.attach(made, service)
                self._clients[service] = made
            return made

    def credentials_method(self) -> str | None:
        """
        Where botocore's chain found the credentials (``env``, ``shared-credentials-file``,
        ``iam-role``, ``assume-role-with-web-identity``...), or ``None`` when it found none.
        """
        with self._lock:
            found = self._session.get_credentials()
        return None if found is None else found.method


def _region_source(region: str | None) -> str:
    """Where ``AwsClients`` found its region, *region* being ``[aws] region``."""
    if region:
        return "[aws] region"
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(variable):
            return variable
    return f"profile {os.environ.get('AWS_PROFILE', 'default')!r}"
