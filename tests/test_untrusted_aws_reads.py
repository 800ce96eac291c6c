"""
AWS answers that cannot be acted on, end to end: moto as AWS with its DescribeInstances answers
bent by an in-process hook, a real HAProxy, and ``reconcile`` in a child process.

- Reads that disagree: the group lists an instance InService and Healthy, DescribeInstances does
  not return it (EC2 is eventually consistent). Its server stays exactly as it is, in the file
  and at runtime, and keeps serving; the report holds it; the run reads again until it agrees.
- A malformed value: DescribeInstances gives an address that carries a second runtime command.
  That instance alone is refused (never added, its existing server never removed or cut), the
  others converge, the exit code, the log and a metric report it, and no command reaches the
  socket through the value.
"""

from __future__ import annotations

import csv

import pytest

from harness.haproxy import wait_for
from harness.stack import BACKEND, GROUP, Daemons, Stack
from tests.support.daemon import DEADLINE


#: The hand-written server of the stack's backend, which no value may ever reach.
HAND_WRITTEN = "maintenance"


@pytest.fixture(name="stack")
def _stack(converged_stack: Stack) -> Stack:
    return converged_stack


def injection(stack: Stack, instance_id: str) -> str:
    """*instance_id*'s address followed by a runtime command that drains the hand-written server."""
    address = stack.servers[instance_id].host
    return f"{address}\nset server {BACKEND}/{HAND_WRITTEN} state drain"


def hand_written_status(stack: Stack) -> str:
    """HAProxy's ``show stat`` status of the hand-written server."""
    rows = csv.DictReader(stack.haproxy.command("show stat").lstrip("# ").splitlines())
    (row,) = [r for r in rows if r["pxname"] == BACKEND and r["svname"] == HAND_WRITTEN]
    return row["status"]


def test_instance_unknown_to_ec2_keeps_its_server_as_it_is(stack: Stack) -> None:
    """
    A serving instance is missing from DescribeInstances while its group lists it InService
    and Healthy: the run changes nothing (file bytes, HAProxy's servers, every instance
    answering), holds the server in its report and keeps reading until its timeout. Once EC2
    knows the instance again, a run has nothing to do.
    """
    unknown = sorted(stack.servers)[0]
    content, states = stack.haproxy.config_path.read_bytes(), stack.states()
    stack.cloud.forget_instance(unknown)

    code, report = stack.reconcile_json("--timeout", "1")

    (backend,) = report["backends"]
    (row,) = [r for r in backend["servers"] if r["instance_id"] == unknown]
    assert row["change"] == "held"
    assert "DescribeInstances did not return it" in row["reason"]
    assert backend["pending"]
    assert report["cycles"] >= 2
    assert report["commands"] == 0
    assert code == 1
    assert stack.haproxy.config_path.read_bytes() == content
    assert stack.states() == states
    assert set(stack.answering()) == set(stack.servers)

    stack.cloud.remember_instance(unknown)
    code, report = stack.reconcile_json()

    assert (code, report["commands"], report["file_writes"]) == (0, 0, 0)
    assert stack.states() == states


def test_malformed_address_refuses_that_instance_alone(stack: Stack) -> None:
    """
    DescribeInstances gives a serving instance and a new one an address that carries a
    runtime command. The run exits 1 naming the value; the other new instance is added and
    serves; the odd new one gets no server and no line; the odd serving one keeps its server
    and its line; the hand-written server is untouched.
    """
    serving = sorted(stack.servers)
    new = sorted(stack.scale_to(5))
    odd = [serving[0], new[0]]
    before = stack.file_servers()
    for instance_id in odd:
        stack.cloud.misreport_address(instance_id, injection(stack, instance_id))

    done = stack.reconcile()

    assert done.returncode == 1
    assert done.stderr.count("malformed private IPv4 address") == 2
    assert "set server api/maintenance state drain" in done.stderr.replace("\\n", " ")
    assert set(stack.serving()) == {*serving, new[1]}
    assert [line for line in before if serving[0] in line] == [
        line for line in stack.file_servers() if serving[0] in line
    ]
    assert not [line for line in stack.file_servers() if new[0] in line]
    assert any(new[1] in line for line in stack.file_servers())
    assert not hand_written_status(stack).startswith(("DRAIN", "MAINT"))
    assert set(stack.answering()) == {*serving, new[1]}


def test_controller_logs_and_counts_a_malformed_value(stack: Stack, daemons: Daemons) -> None:
    """
    The long-running controller reports each cycle with a malformed value as failed, naming
    the value escaped in its log, and counts it in ``reconciler_aws_values_rejected_total``;
    the other instances keep serving.
    """
    odd = sorted(stack.servers)[0]
    stack.cloud.misreport_address(odd, injection(stack, odd))

    daemon = daemons.start(stack, controller={"resync_interval": 1})

    daemon.wait_cycles(2, "a cycle after the first")
    failed = [c for c in daemon.cycles() if c["message"] == "cycle failed"]
    assert failed
    assert all("malformed private IPv4 address" in c["error"] for c in failed)
    wait_for(
        lambda: daemon.metric("reconciler_aws_values_rejected_total", backend=BACKEND) >= 2,
        "the rejections to be counted",
        DEADLINE,
    )
    assert stack.serving() == set(stack.servers)
    assert GROUP in failed[0]["error"]
