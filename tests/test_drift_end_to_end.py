"""
``reconcile drift`` against the real things: a moto server and a real HAProxy on loopback, read
through the real adapters (``AwsMembership``, ``FileStore``, ``RuntimeSocket``) by
``reconcile.observe``, exactly as a cycle reads them.

Each test first brings the backend in sync with a real cycle, then breaks one thing the way it
breaks in production (the group scales without a cycle, someone edits HAProxy by hand, an
instance is terminated) and checks the verdict, the exit code and that a cycle then clears it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest

from harness.haproxy import BackendSpec, HAProxyFactory, HAProxyProcess
from harness.moto import REGION, Cloud
from reconciler import drift_table
from reconciler.core import drift
from reconciler.core.drift import DriftReport, DriftRow, RuntimeState, Status, Verdict
from reconciler.core.settings import AwsSettings, Binding, HAProxySettings, Settings
from reconciler.cycle import observe, run_cycle
from reconciler.ports import Ports
from reconciler.runner import build_ports
from tests.support.schema import validate


BACKEND = "api"
ASG = "api-asg"
PORT = 8080
PREFIX = "api-"
UNMANAGED = "maintenance-page"


@dataclass
class Site:
    """One HAProxy, one group and the settings and adapters that connect them."""

    cloud: Cloud
    haproxy: HAProxyProcess
    settings: Settings
    ports: Ports
    #: The group's instance ids at the start, sorted.
    ids: list[str]

    def report(self) -> DriftReport:
        """What ``reconcile drift`` reports now."""
        return drift.assess(self.settings, observe(self.settings, self.ports)[0])

    def rows(self) -> dict[str, DriftRow]:
        """The rows of the backend by instance id (by server name for unmanaged ones)."""
        return {r.instance_id or r.server or "": r for r in self.report().backends[0].rows}

    def converge(self) -> None:
        """
        Run real cycles until nothing is pending. Without health checks or sessions nothing
        waits on time: an addition takes one cycle, a removal two (maintenance, then delete).
        """
        for _ in range(3):
            result = run_cycle(self.settings, self.ports)
            assert result.ok, result.errors
            if not result.pending:
                return
        pytest.fail("still pending after 3 cycles")

    def scale_out(self) -> str:
        """Add one instance to the group, without a cycle; return its id."""
        self.cloud.set_desired(ASG, len(self.ids) + 1)
        (new,) = set(self.cloud.serving(ASG)) - set(self.ids)
        return new


def make_settings(haproxy: HAProxyProcess, *, asg: str = ASG) -> Settings:
    """Settings for one backend fed by *asg*, managing *haproxy*'s file through its socket."""
    return Settings(
        aws=AwsSettings(region=REGION),
        haproxy=HAProxySettings(config=haproxy.config_path, socket=haproxy.socket_path),
        backends=(Binding(name=BACKEND, asg=asg, port=PORT, server_prefix=PREFIX),),
    )


@pytest.fixture(name="site")
def _site(cloud: Cloud, haproxy_factory: HAProxyFactory) -> Site:
    """Two InService instances, HAProxy with a hand-written server, brought in sync."""
    haproxy = haproxy_factory(BackendSpec(BACKEND, servers=(f"{UNMANAGED} 127.0.0.9:{PORT}",)))
    settings = make_settings(haproxy)
    site = Site(cloud, haproxy, settings, build_ports(settings), cloud.create_group(ASG, 2))
    site.converge()
    return site


class TestVerdicts:
    """Each production mishap shows up as its verdict, and a cycle clears it."""

    def test_converged_site_is_in_sync(self, site: Site) -> None:
        """Right after a cycle: every instance ok, the hand-written server unmanaged, exit 0."""
        report = site.report()
        rows = site.rows()
        assert report.in_sync
        assert drift_table.exit_code(report) == drift_table.EXIT_IN_SYNC
        assert {rows[i].verdict for i in site.ids} == {Verdict.OK}
        assert rows[site.ids[0]].runtime_state is RuntimeState.UP
        assert rows[site.ids[0]].private_ip == site.cloud.serving(ASG)[site.ids[0]]

    def test_instance_added_without_a_cycle_is_missing(self, site: Site) -> None:
        """The group grew and no cycle ran: the new instance is missing; a cycle fixes it."""
        new = site.scale_out()
        report = site.report()
        assert site.rows()[new].verdict is Verdict.MISSING
        assert drift_table.exit_code(report) == drift_table.EXIT_DRIFT
        site.converge()
        assert site.report().in_sync

    def test_server_added_by_hand_at_runtime_is_runtime_only(self, site: Site) -> None:
        """``add server`` on the socket for a new instance: running, not in the file."""
        new = site.scale_out()
        address = f"{site.cloud.serving(ASG)[new]}:{PORT}"
        name = f"{BACKEND}/{PREFIX}{new}"
        assert site.haproxy.command(f"add server {name} {address}").startswith("New server")
        assert site.haproxy.command(f"set server {name} state ready").strip() == ""
        row = site.rows()[new]
        assert row.verdict is Verdict.RUNTIME_ONLY
        assert row.runtime_state is RuntimeState.UP
        assert not row.in_file
        site.converge()
        assert site.report().in_sync

    def test_server_deleted_at_runtime_only_is_file_only(self, site: Site) -> None:
        """``del server`` on the socket: the file still has it, so a reload would add it back."""
        name = f"{BACKEND}/{PREFIX}{site.ids[0]}"
        site.haproxy.command(f"set server {name} state maint")
        assert site.haproxy.command(f"del server {name}").startswith("Server deleted")
        row = site.rows()[site.ids[0]]
        assert row.verdict is Verdict.FILE_ONLY
        assert row.runtime_state is RuntimeState.ABSENT
        assert row.in_file
        site.converge()
        assert site.report().in_sync

    def test_terminated_instance_still_in_haproxy_is_stale(self, site: Site) -> None:
        """The instance left the group; its server is still everywhere until a cycle runs."""
        site.cloud.terminate(site.ids[0])
        row = site.rows()[site.ids[0]]
        assert row.verdict is Verdict.STALE
        assert "not in the group" in row.detail
        assert row.lifecycle_state is None
        site.converge()
        assert site.ids[0] not in site.rows()

    def test_hand_written_servers_are_unmanaged_not_drift(self, site: Site) -> None:
        """The file's backup server and one added by hand at runtime: unmanaged, exit 0."""
        site.haproxy.command(f"add server {BACKEND}/hand-made 127.0.0.10:{PORT}")
        report = site.report()
        rows = site.rows()
        assert rows[UNMANAGED].verdict is Verdict.UNMANAGED
        assert rows[UNMANAGED].in_file
        assert rows["hand-made"].verdict is Verdict.UNMANAGED
        assert rows["hand-made"].runtime_state is RuntimeState.MAINT
        assert report.in_sync


class TestUnreadable:
    """What cannot be read is reported, with exit code 1, never as drift or as in sync."""

    def test_missing_group_is_refused(self, site: Site) -> None:
        """A binding to a group that does not exist: refused with the planner's reason."""
        settings = make_settings(site.haproxy, asg="no-such-asg")
        report = drift.assess(settings, observe(settings, build_ports(settings))[0])
        assert report.backends[0].status is Status.REFUSED
        assert "'no-such-asg' not found" in (report.backends[0].refused or "")
        assert drift_table.exit_code(report) == drift_table.EXIT_UNREADABLE

    def test_unreachable_runtime_is_refused(self, site: Site) -> None:
        """A socket nobody listens on: every backend refused with the socket's error."""
        hap = replace(site.settings.haproxy, socket=site.haproxy.workdir / "nobody.sock")
        settings = replace(site.settings, haproxy=hap)
        report = drift.assess(settings, observe(settings, build_ports(settings))[0])
        assert "cannot talk to the HAProxy runtime API" in (report.backends[0].refused or "")
        assert drift_table.exit_code(report) == drift_table.EXIT_UNREADABLE


def test_json_of_a_drifted_site_follows_the_schema(site: Site) -> None:
    """A missing and a stale instance: the JSON validates and names both."""
    new = site.scale_out()
    site.cloud.terminate(site.ids[0])
    document = json.loads(json.dumps(drift_table.to_json(site.report())))
    validate(document, drift_table.JSON_SCHEMA)
    verdicts = {r["instance_id"]: r["verdict"] for r in document["backends"][0]["rows"]}
    assert verdicts[new] == "missing"
    assert verdicts[site.ids[0]] == "stale"
    assert document["summary"]["drifted"] == 1
