"""
``[haproxy] zone = "auto"``: the node's zone from a real IMDSv2 endpoint on loopback (a small
HTTP server that hands out session tokens and answers only requests that carry one), reached
through botocore's settings (``AWS_EC2_METADATA_SERVICE_ENDPOINT`` and friends).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.haproxy import PlainTextHandler
from reconciler.adapters.aws.imds import ZONE_PATH, node_zone
from reconciler.core.errors import ConfigError
from reconciler.core.settings import Settings
from reconciler.runner import with_node_zone
from tests.support.settings_files import VALID, write
from tests.support.worlds import make_settings


# Names of the protocol, not secrets.
TOKEN_PATH = "/latest/api/token"  # noqa: S105
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"  # noqa: S105


@dataclass
class Imds:
    """What the endpoint answers, and the requests it saw (method, path, token sent)."""

    url: str
    zone: str = "eu-west-1b"
    #: ``PUT latest/api/token`` hands out tokens (else 403, as with IMDSv2 off for the caller).
    tokens: bool = True
    #: Answers to give the zone request before the real one: each an HTTP status.
    failures: list[int] = field(default_factory=list)
    issued: set[str] = field(default_factory=set)
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)


def _handler(imds: Imds) -> type[BaseHTTPRequestHandler]:
    class Handler(PlainTextHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server names the handlers
            self._saw()
            if self.path != TOKEN_PATH or not self.headers.get(TTL_HEADER) or not imds.tokens:
                self._answer(HTTPStatus.FORBIDDEN, "")
                return
            token = uuid.uuid4().hex
            imds.issued.add(token)
            self._answer(HTTPStatus.OK, token)

        def do_GET(self) -> None:  # noqa: N802 - http.server names the handlers
            self._saw()
            if self.headers.get(TOKEN_HEADER) not in imds.issued:
                self._answer(HTTPStatus.UNAUTHORIZED, "")
            elif self.path != f"/{ZONE_PATH}":
                self._answer(HTTPStatus.NOT_FOUND, "")
            elif imds.failures:
                self._answer(imds.failures.pop(0), "")
            else:
                self._answer(HTTPStatus.OK, imds.zone)

        def _saw(self) -> None:
            imds.seen.append((self.command, self.path, self.headers.get(TOKEN_HEADER)))

    return Handler


def aws_environment(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Nothing of the developer's AWS setup; the metadata service at *endpoint*."""
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Imds]:
    """An IMDSv2 endpoint on 127.0.0.1 that botocore's settings point at."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    endpoint = Imds(f"http://127.0.0.1:{server.server_address[1]}/")
    server.RequestHandlerClass = _handler(endpoint)
    # A short poll: shutdown waits for the loop to look at its flag.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    aws_environment(monkeypatch, endpoint.url)
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def nowhere() -> str:
    """An endpoint on 127.0.0.1 where nothing listens (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"


def refused(detail: str) -> str:
    """The message for a metadata service that gave no zone, for *detail*."""
    return (
        '[haproxy] zone = "auto": the instance metadata service did not answer '
        f"({detail}); set the zone by name"
    )


def settings_with_zone(zone: str | None) -> Settings:
    """Settings with one backend, and ``[haproxy] zone`` *zone*."""
    made = make_settings()
    return replace(made, haproxy=replace(made.haproxy, zone=zone))


def problem(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    (only,) = exc.value.problems
    return only


# -- the token flow --------------------------------------------------------------------------------


def test_zone_comes_from_the_imdsv2_token_flow(imds: Imds) -> None:
    """A token first (PUT), then the zone asked with it (GET)."""
    assert node_zone() == "eu-west-1b"

    (token,) = imds.issued
    assert imds.seen == [("PUT", TOKEN_PATH, None), ("GET", f"/{ZONE_PATH}", token)]


def test_without_a_token_the_zone_is_refused(imds: Imds) -> None:
    """
    No token to be had: botocore asks once more without one (IMDSv1), which an instance that
    requires IMDSv2 refuses with 401; the message says so.
    """
    imds.tokens = False

    with pytest.raises(ConfigError) as exc:
        node_zone()

    assert problem(exc) == refused(f"HTTP 401 from {imds.url}{ZONE_PATH}")
    assert imds.seen == [("PUT", TOKEN_PATH, None), ("GET", f"/{ZONE_PATH}", None)]


def test_imdsv1_disabled_asks_only_with_a_token(
    imds: Imds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AWS_EC2_METADATA_V1_DISABLED``: without a token, no request without one."""
    monkeypatch.setenv("AWS_EC2_METADATA_V1_DISABLED", "true")
    imds.tokens = False

    with pytest.raises(ConfigError) as exc:
        node_zone()

    assert "IMDSv1 has been disabled" in problem(exc)
    assert imds.seen == [("PUT", TOKEN_PATH, None)]


# -- botocore's settings ---------------------------------------------------------------------------


def test_attempts_follow_botocores_setting(imds: Imds, monkeypatch: pytest.MonkeyPatch) -> None:
    """``AWS_METADATA_SERVICE_NUM_ATTEMPTS=3`` rides out two failed answers."""
    monkeypatch.setenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "3")
    imds.failures = [HTTPStatus.INTERNAL_SERVER_ERROR, HTTPStatus.SERVICE_UNAVAILABLE]

    assert node_zone() == "eu-west-1b"
    assert [method for method, *_ in imds.seen] == ["PUT", "GET", "GET", "GET"]


def test_one_attempt_by_default_names_the_last_status(imds: Imds) -> None:
    """botocore's default is one attempt; a failed answer is named by its status."""
    imds.failures = [HTTPStatus.SERVICE_UNAVAILABLE]

    with pytest.raises(ConfigError) as exc:
        node_zone()

    assert problem(exc) == refused(f"HTTP 503 from {imds.url}{ZONE_PATH}")


def test_disabled_metadata_service_is_not_asked(
    imds: Imds, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AWS_EC2_METADATA_DISABLED=true``: no request, and the message names the variable."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(ConfigError) as exc:
        node_zone()

    assert problem(exc) == refused("AWS_EC2_METADATA_DISABLED is true")
    assert imds.seen == []


# -- no answer, or no zone in it -------------------------------------------------------------------


def test_unreachable_endpoint_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, nowhere: str
) -> None:
    """Nothing listens: the message names the URL, the attempts and the timeout."""
    aws_environment(monkeypatch, nowhere)

    with pytest.raises(ConfigError) as exc:
        node_zone()

    assert problem(exc) == refused(f"no connection to {nowhere}{ZONE_PATH} in 1 attempt(s) of 1 s")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("AWS_EC2_METADATA_SERVICE_ENDPOINT", "not a url", id="endpoint"),
        pytest.param("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "ipv7", id="endpoint-mode"),
        pytest.param("AWS_METADATA_SERVICE_TIMEOUT", "soon", id="timeout"),
    ],
)
def test_unusable_botocore_setting_is_a_config_error(
    imds: Imds, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """botocore refuses a setting it cannot use: nothing is asked, the message carries it."""
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as exc:
        node_zone()

    assert problem(exc).startswith(
        '[haproxy] zone = "auto": cannot ask the instance metadata service ('
    )
    assert value in problem(exc)
    assert problem(exc).endswith("); set the zone by name")
    assert imds.seen == []


@pytest.mark.parametrize("answer", ["<html>captive portal</html>", "eu-west-1a\nx", "EU-WEST-1A"])
def test_answer_that_is_no_zone_name_is_refused(imds: Imds, answer: str) -> None:
    """What comes back must be a zone name: it is compared with every instance's zone."""
    imds.zone = answer

    with pytest.raises(ConfigError) as exc:
        node_zone()

    assert problem(exc) == (
        '[haproxy] zone = "auto": the instance metadata service answered '
        f"{answer!r}, which is not an Availability Zone name; set the zone by name"
    )


# -- the runner ------------------------------------------------------------------------------------


def test_runner_replaces_auto_with_the_zone(imds: Imds) -> None:
    """``auto`` becomes the service's answer; the rest of the settings stay as they were."""
    auto = settings_with_zone("auto")

    resolved = with_node_zone(auto)

    assert resolved == replace(auto, haproxy=replace(auto.haproxy, zone="eu-west-1b"))


@pytest.mark.parametrize("zone", ["eu-west-1c", None])
def test_runner_asks_nothing_for_a_named_zone_or_none(imds: Imds, zone: str | None) -> None:
    """A zone given by name (or none at all) is used as it is, without a request."""
    named = settings_with_zone(zone)

    assert with_node_zone(named) is named
    assert imds.seen == []


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["--once"], id="once"),
        pytest.param(["drift"], id="drift"),
        pytest.param([], id="daemon"),
    ],
)
def test_reconcile_without_a_zone_answer_exits_2(
    tmp_path: Path, nowhere: str, command: list[str]
) -> None:
    """Every way to run ``reconcile`` resolves the zone first, and stops with the message."""
    config = write(tmp_path, VALID.replace("[haproxy]\n", '[haproxy]\nzone = "auto"\n'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_EC2_METADATA_SERVICE_ENDPOINT=nowhere,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        NO_PROXY="127.0.0.1",
    )

    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    detail = f"no connection to {nowhere}{ZONE_PATH} in 1 attempt(s) of 1 s"
    assert f"  - {refused(detail)}\n" in done.stderr
    assert "Traceback" not in done.stderr
