"""
Text that comes from outside (message bodies, group names, HAProxy replies, paths) is shown as
text: it never forges a log line and never styles or breaks what ``reconcile`` prints.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from harness.haproxy import HAProxyFactory, HTTPBackends
from harness.messages import I1, scaling
from harness.moto import Cloud
from harness.stack import RECONCILE, Stack, build_stack
from reconciler import drift_table, logs, plan_table
from reconciler.adapters.aws.clients import AwsClients
from reconciler.adapters.aws.inbox import SqsInbox
from reconciler.core.drift import BackendDrift, DriftReport, DriftRow, Verdict
from reconciler.core.model import BackendPlan, Change, Plan, Row


FORGED = "2026-01-01 00:00:00,000 ERROR reconciler: controller stopped"
#: A body that, printed raw, would add lines that look like the controller's own.
HOSTILE_BODY = f"hello\n{FORGED}\r\n{FORGED[:20]}\u2028x\tlevel=ERROR"
MARKUP = "[bold]loud[/bold] [/x] [link=http://example.com]x[/link]"
#: Clears a terminal, then rings it, when written raw.
TERMINAL_CONTROL = "\x1b[2J\x07"


@pytest.fixture(name="queue_url")
def _queue_url(cloud: Cloud) -> str:
    """An empty queue in moto."""
    return cloud.sqs.create_queue(QueueName="hostile")["QueueUrl"]


def receive_logged(
    cloud: Cloud, queue_url: str, log_format: logs.LogFormat, capsys: pytest.CaptureFixture[str]
) -> list[str]:
    """Send the hostile bodies, receive them through the inbox; the log lines written."""
    logs.setup(log_format)
    group = json.dumps(scaling(AutoScalingGroupName=f"api\n{FORGED}", EC2InstanceId=I1))
    for body in (HOSTILE_BODY, group):
        cloud.sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    inbox = SqsInbox(AwsClients(max_attempts=1), queue_url, wait_seconds=1)
    received = []
    for _ in range(10):
        received += inbox.receive()
        if len(received) >= 2:
            break
    assert len(received) == 2
    return capsys.readouterr().err.splitlines()


def test_hostile_message_body_stays_on_its_log_line(
    cloud: Cloud, queue_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    Text logs: one line per received message, whatever its body or group name holds; the
    line breaks show as escapes, and a value with spaces is quoted, so it forges no field either.
    """
    lines = receive_logged(cloud, queue_url, "text", capsys)
    assert len(lines) == 2, lines
    assert all(" INFO reconciler.adapters.aws.inbox: message received " in line for line in lines)
    assert not any(line.startswith("2026-01-01") for line in lines)
    (body,) = [line for line in lines if " body=" in line]
    assert ' body="hello\\n2026-01-01 00:00:00,000 ERROR' in body
    assert "\\u2028" in body
    assert '\\tlevel=ERROR"' in body
    (group,) = [line for line in lines if " group=" in line and " body=" not in line]
    assert ' group="api\\n2026-01-01 00:00:00,000 ERROR reconciler: controller stopped"' in group


def test_json_logs_keep_hostile_values_intact_on_one_line(
    cloud: Cloud, queue_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON logs: one object per line, each value exactly as received."""
    records = [json.loads(line) for line in receive_logged(cloud, queue_url, "json", capsys)]
    assert len(records) == 2
    assert {r.get("body") for r in records} >= {HOSTILE_BODY}
    assert {r["group"] for r in records} >= {f"api\n{FORGED}"}


@pytest.fixture(name="text_log")
def _text_log() -> tuple[logging.Logger, io.StringIO]:
    """The package logger in text format, writing to a buffer."""
    buffer = io.StringIO()
    logs.setup("text")
    logger = logging.getLogger(logs.LOGGER_NAME)
    (handler,) = logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    return logger, buffer


def test_text_log_escapes_control_characters_in_message_and_fields(
    text_log: tuple[logging.Logger, io.StringIO],
) -> None:
    """Escape sequences, carriage returns and NULs print as escapes; plain values stay bare."""
    logger, buffer = text_log
    logger.warning(
        "reload failed: %s",
        "boom\x1b[2J\rERROR",
        extra={"fields": {"reason": "a\x00b", "path": "C:\\x", "count": 3, "quote": 'say "hi"'}},
    )
    (line,) = buffer.getvalue().splitlines()
    assert "\x1b" not in line
    assert "\r" not in line
    assert line.endswith(
        r'reload failed: boom\x1b[2J\rERROR reason="a\x00b" path="C:\\x" count=3 '
        r'quote="say \"hi\""'
    )


def test_traceback_lines_are_indented_under_their_record(
    text_log: tuple[logging.Logger, io.StringIO],
) -> None:
    """An exception's lines (its message included) never start a line the way a record does."""
    logger, buffer = text_log
    try:
        raise ValueError(f"bad\n{FORGED}")
    except ValueError:
        logger.exception("cycle crashed")
    first, *rest = buffer.getvalue().splitlines()
    assert first.endswith("cycle crashed")
    assert rest
    assert all(line.startswith("  ") for line in rest), rest


# -- rich output -----------------------------------------------------------------------------------


def rendered(renderable: object) -> str:
    """
    What a wide, colourless console prints for *renderable*, runs of blanks as one space; no
    terminal control character may be among it.
    """
    buffer = io.StringIO()
    Console(file=buffer, width=400, color_system=None).print(renderable)
    printed = buffer.getvalue()
    assert all(c.isprintable() or c == "\n" for c in printed), repr(printed)
    # A caption wraps to its table's width: the words matter here, not where lines break.
    return " ".join(printed.split())


def test_plan_tables_print_markup_in_data_literally() -> None:
    """Group names, reasons and refusals that look like rich markup are printed as they are."""
    reason = f"reason {MARKUP} {TERMINAL_CONTROL}"
    rows = (Row("api-" + I1, I1, "127.0.1.1:80", Change.ADD, reason),)
    plan = Plan(
        (
            BackendPlan("api", f"grp{MARKUP}", rows=rows),
            BackendPlan("web", "web[/]", refused=f"group {MARKUP} not found"),
        )
    )
    text = rendered(plan_table.plan_tables(plan, title=f"plan {MARKUP}"))
    assert f"reason {MARKUP} \\x1b[2J\\x07" in text
    assert f"grp{MARKUP}" in text
    assert f"group {MARKUP} not found" in text
    assert f"plan {MARKUP}" in text


def test_drift_tables_print_markup_in_data_literally() -> None:
    """The drift report shows details, groups and refusals that look like markup as text."""
    row = DriftRow(
        verdict=Verdict.MISSING,
        detail=f"detail {MARKUP} {TERMINAL_CONTROL}",
        server="api-" + I1,
        instance_id=I1,
        lifecycle_state="InService",
        health_status="Healthy",
        ec2_state="running",
        private_ip="127.0.1.1",
        in_file=False,
        file_address=None,
        runtime_state=None,
        runtime_address=None,
        check=None,
        check_status=f"L7STS {MARKUP}",
    )
    found = DriftReport(
        (
            BackendDrift("api", f"grp{MARKUP}", rows=(row,)),
            BackendDrift("web", "web", refused=f"refused {MARKUP}"),
            BackendDrift("db", "db", held=f"held {MARKUP}"),
        ),
        runtime=True,
    )
    text = rendered(drift_table.tables(found))
    for expected in (f"detail {MARKUP}", f"grp{MARKUP}", f"refused {MARKUP}", f"held {MARKUP}"):
        assert expected in text
    assert f"L7STS {MARKUP}" in text
    assert "\\x1b[2J\\x07" in text


# -- the command -----------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``reconcile *args*`` in a child process."""
    return subprocess.run(
        [*RECONCILE, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_config_path_with_markup_is_a_clean_usage_error(tmp_path: Path) -> None:
    """A missing settings file whose path looks like markup: exit 2, the path printed as is."""
    path = f"{tmp_path}/x[/x].toml"
    done = run("--once", "--config", path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"configuration error in {path}:" in done.stderr
    assert "no such file" in done.stderr


def test_bad_option_value_with_markup_is_a_clean_usage_error() -> None:
    """A usage error quoting the user's value: exit 2, the value printed as is."""
    done = run("--log-format", "[/x][bold]")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "'[/x][bold]'" in done.stderr


def test_errors_and_tables_of_a_run_print_markup_literally(
    cloud: Cloud, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends, tmp_path: Path
) -> None:
    """
    A group name that looks like markup and does not exist: ``--once`` exits 1 and its table
    and error name the group as written.
    """
    stack: Stack = build_stack(cloud, haproxy_factory, http_backends, tmp_path)
    group = "[/x][bold]api"
    stack.write_settings({"asg": group})
    done = stack.reconcile()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert group in done.stdout
    assert group in done.stderr


def test_long_errors_are_not_wrapped(tmp_path: Path) -> None:
    """Each problem stays on one line whatever its length, so it can be searched for."""
    text = '[haproxy]\n[[backend]]\nname = "api"\nasg = "x"\nport = 80\n[controller]\n'
    path = tmp_path / "reconciler.toml"
    path.write_text(text + "resync_interval = inf\n")
    done = run("--once", "--config", str(path))
    assert done.returncode == 2
    (problem,) = [line for line in done.stderr.splitlines() if "resync_interval" in line]
    assert problem.endswith("seconds")
