"""
The node's own Availability Zone, from the EC2 instance metadata service: ``[haproxy] zone =
"auto"``, asked once at start-up.

The request is botocore's own IMDS client (``botocore.utils.IMDSFetcher``, which also fetches
instance credentials): IMDSv2's session token from ``PUT latest/api/token``, then ``GET
latest/meta-data/placement/availability-zone`` with it. botocore's settings for that client
apply as they do to credentials: ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (or
``ec2_metadata_service_endpoint`` in the config file), ``AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE``
(``ipv6``), ``AWS_METADATA_SERVICE_TIMEOUT`` and ``AWS_METADATA_SERVICE_NUM_ATTEMPTS`` (1 s and
1 attempt by default), ``AWS_EC2_METADATA_DISABLED``, and ``AWS_EC2_METADATA_V1_DISABLED``.
Like botocore, a node that gets no token (a container behind a hop limit of 1, say) asks once
more without one (IMDSv1), unless that last setting forbids it.

A node that cannot learn its zone cannot route by zone: ``ConfigError``, which names the way
out (the zone by name).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

import botocore.session
from botocore.exceptions import BotoCoreError
from botocore.utils import IMDSFetcher, resolve_imds_endpoint_mode

from reconciler.core.errors import ConfigError
from reconciler.core.settings import ZONE_NAME


if TYPE_CHECKING:
    from collections.abc import Callable

    from botocore.awsrequest import AWSResponse

ZONE_PATH = "latest/meta-data/placement/availability-zone"
_SETTING = '[haproxy] zone = "auto"'
_WAY_OUT = "set the zone by name"


def node_zone() -> str:
    """
    The Availability Zone the instance metadata service gives this node; ``ConfigError`` when
    it gives none.
    """
    session = botocore.session.get_session()
    try:
        fetcher = _ZoneFetcher(
            timeout=session.get_config_variable("metadata_service_timeout"),
            num_attempts=session.get_config_variable("metadata_service_num_attempts"),
            user_agent=session.user_agent(),
            config={
                "ec2_metadata_service_endpoint": session.get_config_variable(
                    "ec2_metadata_service_endpoint"
                ),
                "ec2_metadata_service_endpoint_mode": resolve_imds_endpoint_mode(session),
                "ec2_metadata_v1_disabled": session.get_config_variable("ec2_metadata_v1_disabled"),
            },
        )
    # An endpoint that is no URL, an endpoint mode that is neither ipv4 nor ipv6, a timeout or
    # a number of attempts that is no number.
    except (BotoCoreError, ValueError) as exc:
        msg = f"{_SETTING}: cannot ask the instance metadata service ({exc}); {_WAY_OUT}"
        raise ConfigError([msg]) from exc
    return fetcher.zone()


class _ZoneFetcher(IMDSFetcher):
    """botocore's IMDS client, asked for the placement's Availability Zone."""

    if TYPE_CHECKING:
        # What the zone request uses of botocore's client (its region lookup does the same),
        # which botocore's type stubs leave out as protected.
        _RETRIES_EXCEEDED_ERROR_CLS: type[Exception]
        _disabled: bool
        _num_attempts: int
        _timeout: float

        def _fetch_metadata_token(self) -> str | None: ...
        def _get_request(
            self, url_path: str, retry_func: Callable[[AWSResponse], bool], token: str | None
        ) -> AWSResponse: ...
        def _construct_url(self, path: str) -> str: ...

    def zone(self) -> str:
        """The zone's name; ``ConfigError`` when there is no answer, or no zone name in it."""
        answers: list[AWSResponse] = []

        def unusable(response: AWSResponse) -> bool:
            # botocore's own test (non-200 or empty is tried again), keeping the answer for
            # the error message, which botocore would reduce to "attempts exceeded".
            answers.append(response)
            return response.status_code != HTTPStatus.OK or not response.content

        try:
            token = self._fetch_metadata_token()
            response = self._get_request(ZONE_PATH, unusable, token)
        except self._RETRIES_EXCEEDED_ERROR_CLS as exc:
            raise _unanswered(self._no_answer(answers)) from exc
        # A 400 to the token request, IMDSv1 disabled without a token, a proxy's refusal.
        except BotoCoreError as exc:
            raise _unanswered(str(exc)) from exc
        zone = response.text.strip()
        if not ZONE_NAME.fullmatch(zone):
            msg = (
                f"{_SETTING}: the instance metadata service answered {zone[:80]!r}, which is not "
                f"an Availability Zone name; {_WAY_OUT}"
            )
            raise ConfigError([msg])
        return zone

    def _no_answer(self, answers: list[AWSResponse]) -> str:
        """Why the attempts got no usable answer: the last one's status, else no connection."""
        url = self._construct_url(ZONE_PATH)
        if self._disabled:
            return "AWS_EC2_METADATA_DISABLED is true"
        if answers and answers[-1].status_code != HTTPStatus.OK:
            return f"HTTP {answers[-1].status_code} from {url}"
        if answers:
            return f"an empty answer from {url}"
        return f"no connection to {url} in {self._num_attempts} attempt(s) of {self._timeout} s"


def _unanswered(detail: str) -> ConfigError:
    msg = f"{_SETTING}: the instance metadata service did not answer ({detail}); {_WAY_OUT}"
    return ConfigError([msg])
