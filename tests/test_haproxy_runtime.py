"""
The runtime socket adapter against a real HAProxy, on every version of the matrix, and its parsers
on recorded replies.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.haproxy import (
    HEALTH_CHECK,
    BackendSpec,
    HAProxyFactory,
    HAProxyProcess,
    HTTPBackend,
    HTTPBackends,
    wait_for,
)
from reconciler.adapters.config_store import FileStore
from reconciler.adapters.haproxy_socket import (
    IncompleteReadError,
    RuntimeSocket,
    ServerStats,
    backend_servers,
    parse_servers_state,
    parse_stat,
)
from reconciler.apply import execute
from reconciler.core import next_config
from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.model import (
    BackendPlan,
    Outcome,
    Plan,
    RuntimeServer,
    RuntimeStep,
    ServerLine,
    StepKind,
)
from reconciler.core.settings import AwsSettings, Binding, HAProxySettings, Settings


pytestmark = pytest.mark.haproxy_versions

FAST_CHECK = ("check", "inter", "100ms")


@pytest.fixture(name="haproxy")
def _haproxy(haproxy_factory: HAProxyFactory) -> HAProxyProcess:
    """A HAProxy whose frontend sends to the empty, health-checked backend ``api``."""
    return haproxy_factory(
        BackendSpec("api", lines=(HEALTH_CHECK,)),
        BackendSpec("static", balance="static-rr"),
    )


@pytest.fixture(name="runtime")
def _runtime(haproxy: HAProxyProcess) -> RuntimeSocket:
    """The adapter on that HAProxy's admin socket."""
    return RuntimeSocket(haproxy.socket_path)


def server_line(
    name: str,
    backend: HTTPBackend,
    server_id: int,
    *options: str,
    weight: int | None = None,
    backup: bool = False,
) -> ServerLine:
    """The line of a server *name* pointing at *backend*."""
    return ServerLine(name, backend.host, backend.port, server_id, options, weight, backup)


def find(runtime: RuntimeSocket, name: str, backend: str = "api") -> RuntimeServer | None:
    """Server *name* of *backend* as the adapter reads it, or ``None`` when absent."""
    servers = runtime.read_servers([backend]).backends[backend]
    return next((server for server in servers if server.name == name), None)


def await_server(
    runtime: RuntimeSocket, name: str, condition: Callable[[RuntimeServer], bool], what: str
) -> RuntimeServer:
    """Poll server *name* of ``api`` until *condition* holds for it, and return it."""

    def met() -> RuntimeServer | None:
        server = find(runtime, name)
        return server if server is not None and condition(server) else None

    return wait_for(met, what)


def serve(runtime: RuntimeSocket, line: ServerLine) -> None:
    """Add *line* to ``api`` and put it straight into traffic."""
    runtime.add_server("api", line)
    runtime.set_state("api", line.name, "ready")


def apply_steps(haproxy: HAProxyProcess, runtime: RuntimeSocket, *steps: RuntimeStep) -> Outcome:
    """
    Carry out *steps* of backend ``api`` as a cycle does (``apply.execute``), the file left as it
    is (the plan has no lines for it); fail on any error.
    """
    settings = Settings(
        aws=AwsSettings(region="eu-west-1"),
        haproxy=HAProxySettings(config=haproxy.config_path, socket=haproxy.socket_path),
        backends=(Binding("api", "api-asg", 80),),
    )
    store = FileStore(haproxy.config_path, settings.haproxy.check_command, None)
    maker = next_config.for_cycle(settings, store.read())
    outcome = execute(Plan((BackendPlan("api", "api-asg", steps=steps),)), maker, store, runtime)
    assert outcome.errors == ()
    return outcome


class TestAddingAServer:
    """``add server``, ``enable health`` and the warm-up through ``drain``."""

    def test_warm_up_holds_traffic_until_the_check_passes(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """A new server warms up in drain without traffic, then serves once set ready."""
        backend = http_backends.start("127.0.1.4", name="i-1")
        runtime.add_server("api", server_line("i-1", backend, 11, *FAST_CHECK))

        added = find(runtime, "i-1")
        assert added is not None
        assert (added.server_id, added.address, added.port) == (11, "127.0.1.4", backend.port)
        assert added.in_maintenance

        runtime.enable_health("api", "i-1")
        runtime.set_state("api", "i-1", "drain")
        warm = await_server(
            runtime, "i-1", lambda server: server.check_passed, "the first check to pass"
        )
        assert warm.draining
        assert warm.has_check
        assert (warm.status, warm.check_status) == ("DRAIN", "L7OK")
        assert haproxy.get("/")[0] == 503

        runtime.set_state("api", "i-1", "ready")
        assert haproxy.get("/") == (200, "hello from i-1")

    def test_failing_check_never_passes(
        self, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """A server whose health endpoint fails is seen as failed and never as passed."""
        backend = http_backends.start("127.0.1.4", name="i-1")
        backend.healthy = False
        runtime.add_server("api", server_line("i-1", backend, 11, *FAST_CHECK))
        runtime.enable_health("api", "i-1")
        runtime.set_state("api", "i-1", "drain")

        checked = await_server(
            runtime, "i-1", lambda server: server.check_status == "L7STS", "the check to fail"
        )
        assert not checked.check_passed

    def test_static_algorithm_refuses_dynamic_servers(
        self, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """``add server`` into a ``static-rr`` backend is refused with HAProxy's reason."""
        backend = http_backends.start("127.0.1.4", name="i-1")
        with pytest.raises(PermanentError) as refused:
            runtime.add_server("static", server_line("i-1", backend, 11))
        assert str(refused.value) == (
            f"add server static/i-1 127.0.1.4:{backend.port} id 11 refused by HAProxy: "
            "Backend must use a dynamic load balancing to support dynamic servers."
        )
        assert runtime.read_servers(["static"]).backends["static"] == ()

    def test_name_in_use_means_the_read_was_out_of_date(
        self, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """Adding a name that already exists is transient (read again), the server is kept."""
        first = http_backends.start("127.0.1.4", name="first")
        second = http_backends.start("127.0.1.5", name="second")
        serve(runtime, server_line("i-1", first, 11))
        with pytest.raises(TransientError) as taken:
            runtime.add_server("api", server_line("i-1", second, 12))
        assert "Already exists a server with the same name" in str(taken.value)
        assert "out of date" in str(taken.value)
        kept = find(runtime, "i-1")
        assert kept is not None
        assert (kept.server_id, kept.address) == (11, "127.0.1.4")

    def test_id_in_use_means_the_read_was_out_of_date(
        self, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """Adding with an id another server holds is transient too, and adds nothing."""
        backend = http_backends.start("127.0.1.4", name="first")
        serve(runtime, server_line("i-1", backend, 11))
        with pytest.raises(TransientError, match="custom id 11 already used"):
            runtime.add_server("api", server_line("i-2", backend, 11))
        assert find(runtime, "i-2") is None


class TestWeightsAndBackups:
    """The weight and backup form the controller writes, and what it reads back."""

    def test_weight_is_read_back_after_add_and_after_a_weight_step(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """
        ``add server … weight 80`` reads back 80, a server added without one HAProxy's 1; a
        ``WEIGHT`` step makes it 20 at once, one command, no reload.
        """
        backend = http_backends.start("127.0.1.4", name="i-1")
        serve(runtime, server_line("i-1", backend, 11, weight=80))
        serve(runtime, server_line("i-2", backend, 12))
        weighted, plain = (find(runtime, name) for name in ("i-1", "i-2"))
        assert weighted is not None
        assert plain is not None
        assert (weighted.weight, plain.weight) == (80, 1)
        pid = haproxy.worker_pid()

        line = server_line("i-1", backend, 11, weight=20)
        outcome = apply_steps(haproxy, runtime, RuntimeStep("api", "i-1", StepKind.WEIGHT, line))
        assert outcome.commands == 1
        changed = find(runtime, "i-1")
        assert changed is not None
        assert (changed.weight, changed.usable) == (20, True)
        assert haproxy.worker_pid() == pid

    def test_a_backup_server_is_read_back_and_chosen_only_when_needed(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """
        ``add server … backup`` reads back as a backup; the load balancer chooses only the active
        server while it serves (``lbtot``), and the backup once it is in maintenance.
        """
        serve(runtime, server_line("i-1", http_backends.start("127.0.1.4", name="i-1"), 11))
        standby = http_backends.start("127.0.1.5", name="i-2")
        serve(runtime, server_line("i-2", standby, 12, weight=10, backup=True))
        answers = [haproxy.get("/") for _ in range(4)]
        assert answers == [(200, "hello from i-1")] * 4
        active, backup = (find(runtime, name) for name in ("i-1", "i-2"))
        assert active is not None
        assert backup is not None
        assert (active.backup, active.chosen) == (False, 4)
        assert (backup.backup, backup.weight, backup.chosen) == (True, 10, 0)

        runtime.set_state("api", "i-1", "maint")
        assert haproxy.get("/") == (200, "hello from i-2")
        taken = find(runtime, "i-2")
        assert taken is not None
        assert taken.chosen == 1

    def test_a_proven_add_serves_at_once_despite_its_check(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """
        A server added again in another form whose check passed just before (``proven``) is
        ready at once, its check enabled; an add that is not proven waits in drain.
        """
        backend = http_backends.start("127.0.1.4", name="i-1")
        # Checks far apart: nothing here waits for one.
        slow_check = ("check", "inter", "30s")
        proven = server_line("i-1", backend, 11, *slow_check, backup=True)
        unproven = server_line("i-2", backend, 12, *slow_check)
        apply_steps(
            haproxy,
            runtime,
            RuntimeStep("api", "i-1", StepKind.ADD, proven, proven=True),
            RuntimeStep("api", "i-2", StepKind.ADD, unproven),
        )
        ready, warming = (find(runtime, name) for name in ("i-1", "i-2"))
        assert ready is not None
        assert warming is not None
        assert (ready.usable, ready.has_check, ready.backup) == (True, True, True)
        assert (warming.usable, warming.draining) == (False, True)
        assert haproxy.get("/") == (200, "hello from i-1")


class TestChangingAServer:
    """``set server … addr``."""

    def test_new_address_moves_the_traffic(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """After ``set_address`` the server reaches the new backend, and a repeat is accepted."""
        old = http_backends.start("127.0.1.4", name="old")
        new = http_backends.start("127.0.1.5", name="new")
        serve(runtime, server_line("i-1", old, 11))
        assert haproxy.get("/") == (200, "hello from old")

        runtime.set_state("api", "i-1", "maint")
        runtime.set_address("api", "i-1", new.host, new.port)
        runtime.set_address("api", "i-1", new.host, new.port)
        runtime.set_state("api", "i-1", "ready")

        moved = find(runtime, "i-1")
        assert moved is not None
        assert (moved.address, moved.port) == (new.host, new.port)
        assert haproxy.get("/") == (200, "hello from new")

    def test_invalid_address_is_refused(
        self, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """An address HAProxy cannot parse is refused with its message, by text."""
        serve(runtime, server_line("i-1", http_backends.start("127.0.1.4"), 11))
        with pytest.raises(PermanentError, match="Invalid addr 'not-an-ip'"):
            runtime.set_address("api", "i-1", "not-an-ip", 80)

    def test_new_port_alone_moves_the_traffic(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """Same address, another port: accepted (2.6 and 3.0 word it differently)."""
        old = http_backends.start("127.0.1.4", name="old")
        new = http_backends.start("127.0.1.4", name="new")
        serve(runtime, server_line("i-1", old, 11))

        runtime.set_state("api", "i-1", "maint")
        runtime.set_address("api", "i-1", new.host, new.port)
        runtime.set_state("api", "i-1", "ready")

        moved = find(runtime, "i-1")
        assert moved is not None
        assert (moved.address, moved.port) == (new.host, new.port)
        assert haproxy.get("/") == (200, "hello from new")

    def test_unchanged_address_is_accepted(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """Setting the address and port a server already has changes nothing and is no error."""
        backend = http_backends.start("127.0.1.4", name="i-1")
        serve(runtime, server_line("i-1", backend, 11))
        runtime.set_address("api", "i-1", backend.host, backend.port)
        kept = find(runtime, "i-1")
        assert kept is not None
        assert (kept.address, kept.port) == (backend.host, backend.port)
        assert haproxy.get("/") == (200, "hello from i-1")


class TestRemovingAServer:
    """``drain`` → ``maint`` → ``del server``."""

    def test_delete_requires_maintenance(
        self, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """``del server`` of a drained (not maintained) server is refused and the server stays."""
        serve(runtime, server_line("i-1", http_backends.start("127.0.1.4"), 11))
        runtime.set_state("api", "i-1", "drain")
        with pytest.raises(PermanentError) as refused:
            runtime.delete_server("api", "i-1")
        assert str(refused.value) == (
            "del server api/i-1 refused by HAProxy: "
            "Only servers in maintenance mode can be deleted."
        )
        assert find(runtime, "i-1") is not None

    def test_in_flight_request_completes_through_drain_and_maintenance(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """A slow request survives drain and maint; the server is deleted once it is idle."""
        serve(runtime, server_line("i-1", http_backends.start("127.0.1.4", name="i-1"), 11))
        with ThreadPoolExecutor(max_workers=1) as pool:
            slow = pool.submit(haproxy.get, "/slow?seconds=2")
            await_server(runtime, "i-1", lambda server: server.sessions > 0, "a session")
            runtime.set_state("api", "i-1", "drain")
            runtime.set_state("api", "i-1", "maint")
            busy = find(runtime, "i-1")
            assert busy is not None
            assert busy.in_maintenance
            assert not busy.idle
            with pytest.raises(PermanentError, match="still has connections attached"):
                runtime.delete_server("api", "i-1")
            assert slow.result() == (200, "hello from i-1")

        await_server(runtime, "i-1", lambda server: server.idle, "the server to be idle")
        runtime.delete_server("api", "i-1")
        assert find(runtime, "i-1") is None

    def test_a_drain_is_timed_from_its_start(
        self, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """
        A server up for a while, then drained: its time in state counts from the drain, so the
        drain timeout is too. HAProxy 3.0 does not restart its own clock on ``state drain`` (2.6
        does); a drain timed from the last up/down change would cut what is in flight at once.
        """
        serve(runtime, server_line("i-1", http_backends.start("127.0.1.4"), 11))
        await_server(
            runtime, "i-1", lambda server: server.seconds_in_state >= 3, "3 s in the same state"
        )
        runtime.set_state("api", "i-1", "drain")
        draining = find(runtime, "i-1")
        assert draining is not None
        assert draining.draining
        assert draining.seconds_in_state <= 1

    def test_a_restarted_controller_times_an_ongoing_drain_afresh(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """
        Another adapter (a restarted controller) that finds a server already draining cannot
        know when the drain began: it times it from now, later rather than early.
        """
        serve(runtime, server_line("i-1", http_backends.start("127.0.1.4"), 11))
        await_server(
            runtime, "i-1", lambda server: server.seconds_in_state >= 3, "3 s in the same state"
        )
        runtime.set_state("api", "i-1", "drain")
        restarted = find(RuntimeSocket(haproxy.socket_path), "i-1")
        assert restarted is not None
        assert restarted.draining
        assert restarted.seconds_in_state <= 1

    def test_shutdown_sessions_cuts_what_is_in_flight(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """``shutdown_sessions`` ends a slow request at once with an error for the client."""
        serve(runtime, server_line("i-1", http_backends.start("127.0.1.4"), 11))
        with ThreadPoolExecutor(max_workers=1) as pool:
            slow = pool.submit(haproxy.get, "/slow?seconds=5")
            await_server(runtime, "i-1", lambda server: server.sessions > 0, "a session")
            runtime.set_state("api", "i-1", "maint")
            runtime.shutdown_sessions("api", "i-1")
            # Cut either way: HAProxy 2.6 answers 502, 3.0.10 and later close the client's
            # connection without a response.
            try:
                status: int | None = slow.result()[0]
            except ConnectionResetError:
                status = None
            assert status in (502, None)
        await_server(runtime, "i-1", lambda server: server.idle, "the server to be idle")


class TestReadingServers:
    """``read_servers``: which backends appear, and what a server carries."""

    def test_only_known_backends_appear(
        self, runtime: RuntimeSocket, http_backends: HTTPBackends
    ) -> None:
        """An unknown name and a frontend are absent; a known empty backend maps to no servers."""
        serve(runtime, server_line("i-1", http_backends.start("127.0.1.4"), 11))
        observed = runtime.read_servers(["api", "nosuch", "fe", "static"])
        assert set(observed.backends) == {"api", "static"}
        assert [server.name for server in observed.backends["api"]] == ["i-1"]
        assert observed.backends["static"] == ()

    def test_disabled_backend_is_refused_with_the_fix(
        self, haproxy_factory: HAProxyFactory
    ) -> None:
        """
        HAProxy lists a ``disabled`` backend's servers with id 0 in the state dump and not at all
        in the stat dump: that is no cut reply to read again, but a section to enable.
        """
        haproxy = haproxy_factory(
            BackendSpec("api"), BackendSpec("off", lines=("disabled",), servers=("y 127.0.0.3:9",))
        )
        observed = RuntimeSocket(haproxy.socket_path).read_servers(["api", "off"])
        assert observed.backends == {"api": ()}
        assert set(observed.errors) == {"off"}
        assert "'off' is disabled in HAProxy" in observed.errors["off"]
        assert "read 3 times" not in observed.errors["off"]

    def test_socket_below_admin_level_names_the_fix(
        self, haproxy_factory: HAProxyFactory, http_backends: HTTPBackends
    ) -> None:
        """A ``level user`` socket reads servers but refuses changes, naming ``level admin``."""
        haproxy = haproxy_factory.create()
        user_socket = haproxy.workdir / "user.sock"
        haproxy.start(
            haproxy.basic_config(
                BackendSpec("api"), global_lines=(f"stats socket {user_socket} level user",)
            )
        )
        runtime = RuntimeSocket(user_socket)
        assert runtime.read_servers(["api"]).backends == {"api": ()}
        with pytest.raises(PermanentError, match=r"Permission denied .*needs `level admin`"):
            runtime.add_server("api", server_line("i-1", http_backends.start("127.0.1.4"), 11))

    def test_separators_in_arguments_stay_in_the_argument(self, runtime: RuntimeSocket) -> None:
        """A ``;`` in a name is escaped, so HAProxy never runs the rest as a second command."""
        with pytest.raises(PermanentError) as refused:
            runtime.set_state("api", "x;show info", "drain")
        assert str(refused.value).endswith("refused by HAProxy: No such server.")


@contextlib.contextmanager
def _missing(path: Path) -> Iterator[None]:
    """No socket file at all: HAProxy never started."""
    yield


@contextlib.contextmanager
def _refusing(path: Path) -> Iterator[None]:
    """A socket file nobody listens on: HAProxy stopped and left it behind."""
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
        yield


@contextlib.contextmanager
def _silent(path: Path) -> Iterator[None]:
    """A listener that never answers: HAProxy hung."""
    with socket.socket(socket.AF_UNIX) as hung:
        hung.bind(str(path))
        hung.listen()
        yield


class TestUnreachableSocket:
    """A socket that cannot be talked to is transient and says what to check."""

    @pytest.mark.parametrize(
        "situation",
        [
            pytest.param(_missing, id="missing"),
            pytest.param(_refusing, id="refused"),
        ],
    )
    def test_unreachable_socket_is_transient(
        self, situation: Callable[[Path], contextlib.AbstractContextManager[None]]
    ) -> None:
        """Missing and refusing sockets raise ``TransientError`` naming the config line."""
        with tempfile.TemporaryDirectory(prefix="rt-") as directory:
            path = Path(directory) / "admin.sock"
            with situation(path), pytest.raises(TransientError) as unreachable:
                RuntimeSocket(path, timeout=0.2).read_servers(["api"])
        assert f"stats socket {path} level admin" in str(unreachable.value)

    def test_silent_socket_is_transient(self) -> None:
        """A listener that never answers raises ``TransientError`` once the command's time is up."""
        with tempfile.TemporaryDirectory(prefix="rt-") as directory:
            path = Path(directory) / "admin.sock"
            with _silent(path), pytest.raises(TransientError) as silent:
                RuntimeSocket(path, timeout=0.2).read_servers(["api"])
        assert f"did not answer `show stat api 4 -1` within 0.2s on {path}" in str(silent.value)


# Replies recorded from HAProxy 2.6.12 while a slow request was in flight on a drained server.
RECORDED_STATE = (
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iw"
    "eight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_"
    "check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord s"
    "rv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 api 11 i-1 127.0.1.4 2 8 1 1 0 15 3 4 6 0 0 1 - 39891 - 0 0 - - 0\n"
    "\n"
)
RECORDED_STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttl"
    "e,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_"
    "1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_to"
    "t,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,"
    "ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_ris"
    "e,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_"
    "rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache"
    "_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_"
    "conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,a"
    "gg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_"
    "rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors"
    ",h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,"
    "h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connection"
    "s,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spli"
    "ced_bytes_in,h1_spliced_bytes_out,\n"
    "api,i-1,0,0,1,1,,2,75,151,,0,,0,0,0,0,DRAIN,1,1,0,0,0,0,0,,1,3,11,,2,,2,2,,2,L7OK,200,0,"
    "0,1,0,0,0,0,,,,1,0,0,,,,,0,,,0,0,0,0,,,,Layer7 check passed,,2,3,4,,,,127.0.1.4:39891,,h"
    "ttp,,,,,,,,0,2,0,,,0,0,0,0,0,0,0,0,0,1,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "\n"
)


class TestParsingReplies:
    """The pure parsers on recorded and hand-made replies."""

    def test_recorded_replies_join_into_a_server(self) -> None:
        """A recorded ``show servers state`` row joined with its ``show stat`` row."""
        assert backend_servers("api", RECORDED_STATE, RECORDED_STAT) == (
            RuntimeServer(
                backend="api",
                name="i-1",
                server_id=11,
                address="127.0.1.4",
                port=39891,
                op_state=2,
                admin_state=8,
                check_state=6,
                check_result=3,
                seconds_in_state=0,
                sessions=1,
                queued=0,
                idle_connections=0,
                status="DRAIN",
                check_status="L7OK",
                weight=1,
                backup=False,
                chosen=2,
            ),
        )

    def test_stat_columns_are_found_by_name(self) -> None:
        """Reordered columns, quoted commas and non-server rows do not confuse ``parse_stat``."""
        text = (
            "# type,check_desc,svname,pxname,sid,status,check_status,scur,qcur,idle_conn_cur,"
            "lbtot,bck\n"
            '2,"ok, really",s1,web,7,UP,L7OK,3,1,2,40,1\n'
            "1,,BACKEND,web,0,UP,,3,1,,40,1\n"
            "0,,FRONTEND,fe,0,OPEN,,0,,,,\n"
            "\n"
        )
        assert parse_stat(text) == {
            ("web", "s1"): ServerStats(
                server_id=7,
                sessions=3,
                queued=1,
                idle_connections=2,
                status="UP",
                check_status="L7OK",
                backup=True,
                chosen=40,
            )
        }

    def test_missing_port_and_address_are_kept_apart(self) -> None:
        """A server without port reads ``None``; one added by hostname keeps ``-`` as address."""
        header = "".join(RECORDED_STATE.splitlines(keepends=True)[:2])
        text = (
            header
            + "3 api 1 x 127.0.0.1 0 1 1 1 0 1 0 0 0 0 0 0 - 0 - 0 0 - - 0\n"
            + "3 api 2 h - 0 1 1 1 0 1 0 0 0 0 0 0 localhost 8080 - 0 0 - - 0\n"
            + "\n"
        )
        portless, named = parse_servers_state(text)
        assert (portless.address, portless.port) == ("127.0.0.1", None)
        assert (named.address, named.port) == ("-", 8080)

    def test_unknown_backend_is_absent(self) -> None:
        """No backend of the name (or a frontend's, which ``show stat`` lists empty): ``None``."""
        stat_header = RECORDED_STAT.splitlines(keepends=True)[0] + "\n"
        assert backend_servers("x", "Can't find backend.\n\n", "No such proxy.\n\n") is None
        assert backend_servers("fe", "Can't find backend.\n\n", stat_header) is None

    @pytest.mark.parametrize(
        ("state", "stat", "complaint"),
        [
            pytest.param(
                RECORDED_STATE,
                RECORDED_STAT.splitlines(keepends=True)[0] + "\n",
                r"name different servers \(only in the first: i-1 \(id 11\); only in the "
                r"second: none\)",
                id="server-added-between-the-dumps",
            ),
            pytest.param(
                RECORDED_STATE.replace("3 api 11 i-1", "3 api 12 i-1"),
                RECORDED_STAT,
                "name different servers",
                id="ids-differ",
            ),
            pytest.param(
                "Can't find backend.\n\n",
                RECORDED_STAT,
                "`show servers state api` knows no such backend",
                id="backend-gone-between-the-dumps",
            ),
            pytest.param(
                RECORDED_STATE,
                "No such proxy.\n\n",
                "`show stat api 4 -1` knows no such backend",
                id="backend-new-between-the-dumps",
            ),
        ],
    )
    def test_dumps_that_disagree_are_incomplete(
        self, state: str, stat: str, complaint: str
    ) -> None:
        """The two dumps must name the same servers with the same ids."""
        with pytest.raises(IncompleteReadError, match=complaint):
            backend_servers("api", state, stat)

    def test_rows_of_another_backend_are_incomplete(self) -> None:
        """A dump answering for another backend than the one asked is not used."""
        with pytest.raises(IncompleteReadError, match="has rows of backend api"):
            backend_servers("web", RECORDED_STATE, RECORDED_STAT)

    @pytest.mark.parametrize(
        ("parse", "text", "complaint"),
        [
            pytest.param(parse_servers_state, "", "is empty", id="state-empty"),
            pytest.param(
                parse_servers_state, RECORDED_STATE[:-1], "terminating empty line", id="state-cut"
            ),
            pytest.param(
                parse_servers_state,
                "".join(RECORDED_STATE.splitlines(keepends=True)[:2]),
                "terminating empty line",
                id="state-cut-after-header",
            ),
            pytest.param(
                parse_servers_state,
                "Unknown command.\n\n",
                "format version line `1`",
                id="state-not-a-dump",
            ),
            pytest.param(
                parse_servers_state, "1\n# be_id be_name\n\n", "has no column", id="state-columns"
            ),
            pytest.param(
                parse_servers_state,
                RECORDED_STATE.replace(" - - 0\n", "\n"),
                "a row of 22 fields under a header of 25",
                id="state-short-row",
            ),
            pytest.param(
                parse_servers_state,
                RECORDED_STATE.replace(" 39891 ", " x "),
                "a row that does not parse",
                id="state-bad-number",
            ),
            pytest.param(
                parse_servers_state,
                RECORDED_STATE.replace("\n3 api", "\n\n3 api"),
                "empty line before its end",
                id="state-inner-empty-line",
            ),
            pytest.param(
                parse_servers_state,
                RECORDED_STATE.replace(" srv_uweight ", " srv_weight "),
                "has no column srv_uweight",
                id="state-no-weight",
            ),
            pytest.param(parse_stat, RECORDED_STAT[:-1], "terminating empty line", id="stat-cut"),
            pytest.param(
                parse_stat,
                RECORDED_STAT.replace(",bck,", ",backup,"),
                "has no column bck",
                id="stat-no-backup-column",
            ),
            pytest.param(
                parse_stat,
                RECORDED_STAT.replace("DRAIN,1,1,0,", "DRAIN,1,1,,"),
                "a row that does not parse",
                id="stat-backup-flag-missing",
            ),
            pytest.param(parse_stat, "Permission denied\n\n", "header line", id="stat-not-a-dump"),
            pytest.param(
                parse_stat, "# pxname,svname,type\n\n", "has no column", id="stat-columns"
            ),
            pytest.param(
                parse_stat,
                RECORDED_STAT.splitlines(keepends=True)[0]
                + RECORDED_STAT.splitlines()[1][:100]
                + "\n\n",
                "fields under a header",
                id="stat-short-row",
            ),
        ],
    )
    def test_malformed_dumps_are_incomplete(
        self, parse: Callable[[str], object], text: str, complaint: str
    ) -> None:
        """Any dump not framed as a whole one raises ``IncompleteReadError`` saying how."""
        with pytest.raises(IncompleteReadError, match=complaint):
            parse(text)
