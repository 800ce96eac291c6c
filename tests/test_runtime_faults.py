"""
A runtime API that misbehaves: cut, garbled, out-of-date and trickling replies, and arguments that
would end a command early. A real HAProxy 2.6 answers behind ``tests/support/faulty_socket.py``,
which injects each fault; assertions are about what the adapter reports, what HAProxy's servers
are, what the file holds and how ``reconcile --once`` exits.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest

from harness.faulty_socket import Close, FaultyProxy, Garble, Refuse, Trickle, Truncate
from harness.haproxy import HEALTH_CHECK, BackendSpec, HAProxyFactory, HAProxyProcess
from harness.stack import BACKEND, GROUP, SERVER_PREFIX, Stack
from reconciler.adapters.haproxy_socket import RuntimeSocket
from reconciler.core.errors import PermanentError, TransientError


HAND_WRITTEN = "static1 127.0.0.1:9"
STATE = r"^show servers state api$"
STAT = r"^show stat api 4 -1$"


@pytest.fixture(name="haproxy")
def _haproxy(haproxy_factory: HAProxyFactory) -> HAProxyProcess:
    """A HAProxy with the health-checked backend ``api`` holding one hand-written server."""
    return haproxy_factory(BackendSpec("api", lines=(HEALTH_CHECK,), servers=(HAND_WRITTEN,)))


@pytest.fixture(name="proxy")
def _proxy(haproxy: HAProxyProcess) -> Iterator[FaultyProxy]:
    """The fault-injecting proxy in front of that HAProxy's admin socket."""
    with FaultyProxy(haproxy.socket_path) as proxy:
        yield proxy


@pytest.fixture(name="runtime")
def _runtime(proxy: FaultyProxy) -> RuntimeSocket:
    """The adapter, talking to HAProxy through the proxy."""
    return RuntimeSocket(proxy.path, timeout=2)


def add_servers(haproxy: HAProxyProcess, count: int) -> list[str]:
    """Add *count* ready servers ``d1``... to ``api`` directly; return their names."""
    names = [f"d{n}" for n in range(1, count + 1)]
    for n, name in enumerate(names, start=1):
        assert haproxy.command(f"add server api/{name} 127.0.0.1:{9000 + n} id {100 + n}")
        haproxy.command(f"set server api/{name} state ready")
    return names


def names(runtime: RuntimeSocket) -> set[str]:
    """The servers of ``api`` the adapter reads; fails when it reports the read incomplete."""
    observed = runtime.read_servers(["api"])
    assert observed.errors == {}
    return {server.name for server in observed.backends["api"]}


class TestIncompleteReads:
    """A dump is used only when it is complete and both dumps agree; else the backend is refused."""

    @pytest.mark.parametrize(
        ("pattern", "fault"),
        [
            pytest.param(STATE, Truncate(lines=3), id="state-first-row-only"),
            pytest.param(STATE, Truncate(lines=2), id="state-header-only"),
            pytest.param(STATE, Truncate(size=300), id="state-cut-mid-row"),
            pytest.param(STATE, Truncate(lines=5), id="state-without-terminator"),
            pytest.param(STATE, Close(), id="state-no-reply"),
            pytest.param(STAT, Truncate(lines=2), id="stat-first-row-only"),
            pytest.param(STAT, Truncate(size=2000), id="stat-cut-mid-row"),
            pytest.param(STAT, Close(forward=True), id="stat-no-reply"),
            pytest.param(STATE, Garble(rb"\bd2\b", b"dX"), id="state-garbled-name"),
            pytest.param(STAT, Garble(rb"(?m)^api,d3,.*\n", b""), id="stat-row-missing"),
            pytest.param(STAT, Garble(rb",104,", b",105,"), id="stat-garbled-id"),
            pytest.param(STATE, Garble(rb"(?m)^1\n", b""), id="state-no-version-line"),
        ],
    )
    def test_incomplete_read_refuses_the_backend(
        self,
        haproxy: HAProxyProcess,
        proxy: FaultyProxy,
        runtime: RuntimeSocket,
        pattern: str,
        fault: Truncate | Close | Garble,
    ) -> None:
        """Every attempt damaged: no servers of ``api`` are reported, only why they are not."""
        add_servers(haproxy, 4)
        proxy.inject(pattern, fault)
        observed = runtime.read_servers(["api"])
        assert "api" not in observed.backends
        assert "HAProxy's reply to `show" in observed.errors["api"]
        assert "read 3 times" in observed.errors["api"]

    def test_one_cut_reply_is_read_again_at_once(
        self, haproxy: HAProxyProcess, proxy: FaultyProxy, runtime: RuntimeSocket
    ) -> None:
        """A single cut reply (a worker stopping mid-dump) costs a re-read, not the backend."""
        servers = {"static1", *add_servers(haproxy, 3)}
        proxy.inject(STATE, Truncate(lines=3), times=1)
        assert names(runtime) == servers

    def test_other_backends_are_still_read(self, haproxy_factory: HAProxyFactory) -> None:
        """Only the backend whose reply is cut is refused."""
        haproxy = haproxy_factory(
            BackendSpec("api", servers=(HAND_WRITTEN,)),
            BackendSpec("web", servers=("w1 127.0.0.1:9",)),
        )
        with FaultyProxy(haproxy.socket_path) as proxy:
            proxy.inject(STATE, Truncate(lines=2))
            observed = RuntimeSocket(proxy.path, timeout=2).read_servers(["api", "web"])
        assert set(observed.errors) == {"api"}
        assert [server.name for server in observed.backends["web"]] == ["w1"]

    @pytest.mark.parametrize(
        "fault",
        [
            pytest.param(Truncate(lines=4), id="cut"),
            pytest.param(Refuse("Permission denied"), id="not-show-info"),
        ],
    )
    def test_show_info_without_uptime_fails_the_read(
        self, proxy: FaultyProxy, runtime: RuntimeSocket, fault: Truncate | Refuse
    ) -> None:
        """Without the worker's age a young worker could pass for an old one: the read fails."""
        proxy.inject(r"^show info$", fault)
        with pytest.raises(TransientError, match="show info"):
            runtime.read_servers(["api"])


class TestChangesWithoutReply:
    """A change command whose connection closes without a reply is not taken for a success."""

    @pytest.mark.parametrize(
        "fault",
        [
            pytest.param(Close(), id="not-run"),
            pytest.param(Close(forward=True), id="run-unanswered"),
        ],
    )
    def test_unanswered_change_is_transient(
        self, haproxy: HAProxyProcess, proxy: FaultyProxy, runtime: RuntimeSocket, fault: Close
    ) -> None:
        """HAProxy answers even a silent success with a newline: nothing means unknown."""
        proxy.inject(r"^set server", fault)
        with pytest.raises(TransientError, match="without answering `set server api/static1"):
            runtime.set_state("api", "static1", "drain")


class TestDeadline:
    """One deadline covers a whole command: connect, send and the entire reply."""

    def test_trickling_reply_ends_at_the_deadline(
        self, proxy: FaultyProxy, haproxy: HAProxyProcess
    ) -> None:
        """A peer sending a byte every 20 ms never resets the clock: the read fails at 0.5 s."""
        proxy.inject(STAT, Trickle(0.02))
        with pytest.raises(TransientError) as slow:
            RuntimeSocket(proxy.path, timeout=0.5).read_servers(["api"])
        assert "did not answer `show stat api 4 -1` within 0.5s" in str(slow.value)


class TestControlCharacters:
    """A word with a control character is refused before anything reaches HAProxy."""

    @pytest.mark.parametrize(
        "separator",
        [
            pytest.param("\n", id="newline"),
            pytest.param("\r", id="carriage-return"),
            pytest.param("\t", id="tab"),
            pytest.param("\x00", id="nul"),
            pytest.param("\x7f", id="delete"),
        ],
    )
    def test_control_character_is_refused_unsent(
        self, haproxy: HAProxyProcess, proxy: FaultyProxy, runtime: RuntimeSocket, separator: str
    ) -> None:
        """An address smuggling a second command is refused; the other server keeps serving."""
        # Spaces are escaped into the word, tabs are not: HAProxy splits words on both.
        forged = f"127.0.0.1{separator}set\tserver\tapi/static1\tstate\tdrain"
        with pytest.raises(PermanentError, match="control character"):
            runtime.set_address("api", "d1", forged, 80)
        assert proxy.log == []
        row = haproxy.command("show servers state api").splitlines()[2].split()
        assert (row[3], row[6]) == ("static1", "0")


class TestChaosMode:
    """The proxy's random mode, which the chaos suite drives."""

    def test_same_seed_same_faults(self, haproxy: HAProxyProcess) -> None:
        """Two proxies with one seed inject the same faults into the same commands."""
        logs = []
        for _ in range(2):
            with FaultyProxy(haproxy.socket_path, seed=7) as proxy:
                proxy.chaos(0.5, [Truncate(lines=1), Close(), Garble(count=3)], pattern="^show")
                runtime = RuntimeSocket(proxy.path, timeout=2)
                for _ in range(5):
                    # A cut `show info` fails the whole read: only the faults matter here.
                    with contextlib.suppress(TransientError):
                        runtime.read_servers(["api"])
                logs.append(proxy.log)
        assert logs[0] == logs[1]
        assert any(fault for _, fault in logs[0])
        assert any(not fault for _, fault in logs[0])


# -- reconcile --once through the proxy ------------------------------------------------------------


@pytest.fixture(name="stack")
def _stack(converged_stack: Stack) -> Stack:
    return converged_stack


@pytest.fixture(name="stack_proxy")
def _stack_proxy(stack: Stack) -> Iterator[FaultyProxy]:
    """A proxy in front of the stack's HAProxy; the controller's settings point at it."""
    with FaultyProxy(stack.haproxy.socket_path) as proxy:
        text = stack.settings.read_text()
        direct = f'socket = "{stack.haproxy.socket_path}"'
        assert direct in text
        stack.settings.write_text(text.replace(direct, f'socket = "{proxy.path}"'))
        yield proxy


def runtime_servers(stack: Stack) -> set[tuple[str, ...]]:
    """Name, id, address, port and admin state of every server of ``api``, read directly."""
    lines = stack.haproxy.command(f"show servers state {BACKEND}").splitlines()
    header = lines[1].removeprefix("# ").split()
    rows = [dict(zip(header, line.split(), strict=True)) for line in lines[2:] if line]
    columns = ("srv_name", "srv_id", "srv_addr", "srv_port", "srv_admin_state")
    return {tuple(row[c] for c in columns) for row in rows}


def managed_lines(stack: Stack) -> list[str]:
    """The managed ``server`` lines of the file."""
    return [line for line in stack.file_servers() if line.startswith(f"server {SERVER_PREFIX}")]


class TestOnceWithFaults:
    """``reconcile --once`` against a runtime API that misbehaves changes nothing and exits 1."""

    @pytest.mark.parametrize(
        ("pattern", "fault", "named"),
        [
            pytest.param(STATE, Truncate(lines=3), "show servers state", id="cut-state"),
            pytest.param(STAT, Truncate(lines=2), "show stat", id="cut-stat"),
        ],
    )
    def test_cut_dump_leaves_file_and_servers_alone(
        self, stack: Stack, stack_proxy: FaultyProxy, pattern: str, fault: Truncate, named: str
    ) -> None:
        """The file stays byte-identical, HAProxy's servers too; the report says why."""
        before_file = stack.haproxy.config_path.read_bytes()
        before_runtime = runtime_servers(stack)
        assert len(managed_lines(stack)) == 3
        stack_proxy.inject(pattern, fault)

        code, report = stack.reconcile_json()

        assert code == 1
        assert stack.haproxy.config_path.read_bytes() == before_file
        assert runtime_servers(stack) == before_runtime
        assert report["commands"] == 0
        (backend,) = report["backends"]
        assert f"HAProxy's reply to `{named}" in backend["refused"]
        assert any(f"`{named}" in error for error in report["errors"])
        assert set(stack.answering()) == set(stack.cloud.serving(GROUP))

    def test_out_of_date_read_never_drops_a_serving_line(
        self, stack: Stack, stack_proxy: FaultyProxy
    ) -> None:
        """
        Both dumps agree but miss a live server (as if read before someone else added it): its
        ``add server`` is refused as a duplicate, the file keeps its line, and the next cycle
        reads again at once and finds everything in place.
        """
        hidden = sorted(stack.cloud.serving(GROUP))[0]
        (hidden_id,) = [i for n, i, *_ in runtime_servers(stack) if hidden in n]
        row = rf"(?m)^.*\b{SERVER_PREFIX}{hidden}\b.*\n".encode()
        stack_proxy.inject(r"^show (servers state|stat) api", Garble(row, b""), times=2)
        before_file = stack.haproxy.config_path.read_bytes()
        before_runtime = runtime_servers(stack)

        code, report = stack.reconcile_json()

        assert code == 1
        assert stack.haproxy.config_path.read_bytes() == before_file
        assert runtime_servers(stack) == before_runtime
        (error,) = report["errors"]
        # HAProxy checks the id first: the hidden server holds the one its line carries.
        assert f"custom id {hidden_id} already used" in error
        assert "out of date" in error
        assert report["cycles"] == 2
        assert hidden in stack.answering(40)

    def test_add_refused_as_duplicate_keeps_the_line(
        self, stack: Stack, stack_proxy: FaultyProxy
    ) -> None:
        """
        A server in the file but gone from HAProxy is added again; when HAProxy calls its id
        taken (someone added a server meanwhile), its line stays, and the next cycle adds it.
        """
        instance = sorted(stack.cloud.serving(GROUP))[0]
        name = f"{BACKEND}/{SERVER_PREFIX}{instance}"
        stack.haproxy.command(f"set server {name} state maint")
        assert "Server deleted." in stack.haproxy.command(f"del server {name}")
        refusal = "'id' : custom id 1 already used at (null):0 ('server x')."
        # The add of a server only, not `add server help` (read once per HAProxy process).
        stack_proxy.inject(rf"^add server {BACKEND}/", Refuse(refusal), times=1)
        before_file = stack.haproxy.config_path.read_bytes()

        code, report = stack.reconcile_json()

        assert code == 1
        (error,) = report["errors"]
        assert refusal in error
        assert "out of date" in error
        assert stack.haproxy.config_path.read_bytes() == before_file
        assert instance in stack.answering(40)

    def test_trickling_socket_ends_the_run_at_its_timeout(
        self, stack: Stack, stack_proxy: FaultyProxy
    ) -> None:
        """``--once --timeout 2`` against a socket sending a byte every 0.3 s exits 1 soon."""
        stack_proxy.inject(r"^show", Trickle(0.3))
        before_file = stack.haproxy.config_path.read_bytes()
        done = stack.reconcile("--json", "--timeout", "2", timeout=20)
        assert done.returncode == 1
        errors = json.loads(done.stdout)["errors"]
        assert any("did not answer `show stat api 4 -1` within 2s" in e for e in errors), errors
        assert stack.haproxy.config_path.read_bytes() == before_file
