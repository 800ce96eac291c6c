"""
What the controller reads of the running HAProxy (``HAProxyFeatures``), what it refuses because of
it, and the replies that differ between versions: against real HAProxy binaries (through the fault
proxy where a reply must be cut, garbled or replaced), and the planner's refusals over fakes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import pytest

from harness.fakes import FakeRuntime
from harness.faulty_socket import FaultyProxy, Garble, Refuse, Truncate
from harness.haproxy import (
    HEALTH_CHECK,
    BackendSpec,
    HAProxyBinary,
    HAProxyFactory,
    HAProxyProcess,
)
from harness.stack import GROUP, SERVER_PREFIX, Stack
from reconciler.adapters.haproxy_socket import RuntimeSocket
from reconciler.core.errors import PermanentError, TransientError
from reconciler.core.model import CycleResult, HAProxyFeatures, RuntimeObservation, ServerLine
from reconciler.cycle import run_cycle
from tests.support.worlds import BACKEND, World, group, instance


pytestmark = pytest.mark.haproxy_versions

HELP = r"^help$"
LEVEL = r"^show cli level$"
KEYWORDS = r"^add server help$"
INFO = r"^show info$"
# The lines of `help` naming `add server` and `del server`, as HAProxy before 2.6 lacks them.
NO_ADD_DEL = Garble(rb"(?m)^  (add|del) server .*\n", b"")


@pytest.fixture(name="haproxy")
def _haproxy(haproxy_factory: HAProxyFactory) -> HAProxyProcess:
    """A HAProxy with the health-checked backend ``api`` and no server."""
    return haproxy_factory(BackendSpec("api", lines=(HEALTH_CHECK,)))


@pytest.fixture(name="proxy")
def _proxy(haproxy: HAProxyProcess) -> Iterator[FaultyProxy]:
    """The fault-injecting proxy in front of that HAProxy's admin socket."""
    with FaultyProxy(haproxy.socket_path) as proxy:
        yield proxy


@pytest.fixture(name="runtime")
def _runtime(proxy: FaultyProxy) -> RuntimeSocket:
    """The adapter, talking to HAProxy through the proxy."""
    return RuntimeSocket(proxy.path, timeout=2)


def sent(proxy: FaultyProxy, command: str) -> int:
    """How many times the adapter sent *command* through *proxy*."""
    return sum(line == command for line, _ in proxy.log)


def features(runtime: RuntimeSocket) -> HAProxyFeatures:
    """The features one read of ``api`` reports."""
    found = runtime.read_servers(["api"]).features
    assert found is not None
    return found


# -- reading them ----------------------------------------------------------------------------------


class TestReadingFeatures:
    """Version, commands, level and keywords, as each HAProxy says them."""

    def test_features_are_what_the_running_haproxy_says(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket
    ) -> None:
        """The version ``show version`` names, every command the controller sends, level admin."""
        found = features(runtime)
        assert found.version == haproxy.command("show version").strip()
        assert found.missing_commands == ()
        assert {"add server", "del server", "show servers state", "help"} <= found.commands
        assert found.level == "admin"
        assert found.can_change_servers
        listed = haproxy.command("add server help")
        if listed.startswith("List of keywords"):
            assert found.server_keywords is not None
            assert "check" in found.server_keywords
        else:
            assert found.server_keywords is None

    def test_features_are_read_once_per_process(
        self, haproxy: HAProxyProcess, proxy: FaultyProxy, runtime: RuntimeSocket
    ) -> None:
        """Cycles of one worker read ``help`` once; the worker of a reload is read afresh."""
        first = features(runtime)
        assert features(runtime) == first
        assert (sent(proxy, "help"), sent(proxy, "show cli level")) == (1, 1)
        haproxy.reload()
        assert features(runtime) == first
        assert (sent(proxy, "help"), sent(proxy, "show cli level")) == (2, 2)

    def test_uptime_going_backwards_is_another_process(
        self, proxy: FaultyProxy, runtime: RuntimeSocket
    ) -> None:
        """Same Pid, lower uptime: a restarted container's HAProxy; its features are read again."""
        proxy.inject(INFO, Garble(rb"(?m)^Uptime_sec: \d+$", b"Uptime_sec: 100000"), times=2)
        assert features(runtime).can_change_servers
        assert features(runtime).can_change_servers
        assert sent(proxy, "help") == 2

    @pytest.mark.parametrize("level", ["operator", "user"])
    def test_socket_below_admin_is_known_by_its_level(
        self, haproxy_factory: HAProxyFactory, level: str
    ) -> None:
        """``help`` lists ``add server`` at every level: only ``show cli level`` tells."""
        haproxy = haproxy_factory.create()
        lower = haproxy.workdir / f"{level}.sock"
        haproxy.start(
            haproxy.basic_config(
                BackendSpec("api"), global_lines=(f"stats socket {lower} level {level}",)
            )
        )
        observed = RuntimeSocket(lower).read_servers(["api"])
        assert observed.backends == {"api": ()}
        assert observed.features is not None
        assert "add server" in observed.features.commands
        assert (observed.features.level, observed.features.server_keywords) == (level, None)
        assert observed.features.below_admin
        assert not observed.features.can_change_servers


class TestDamagedFeatureReplies:
    """A cut or garbled reply never steers anything: it is read again, or fails the read."""

    @pytest.mark.parametrize(
        ("pattern", "fault", "command"),
        [
            pytest.param(HELP, Truncate(lines=20), "help", id="help-cut"),
            pytest.param(HELP, Garble(rb"^The", b"Teh"), "help", id="help-garbled-header"),
            pytest.param(HELP, Garble(rb"(?m)^  show stat ", b"  <show "), "help", id="help-line"),
            pytest.param(LEVEL, Truncate(size=3), "show cli level", id="level-cut"),
            pytest.param(LEVEL, Refuse("superuser"), "show cli level", id="level-unknown"),
            pytest.param(KEYWORDS, Truncate(size=10), "add server help", id="keywords-cut"),
            pytest.param(
                KEYWORDS,
                Refuse("List of keywords supported for dynamic server:\nch eck"),
                "add server help",
                id="keywords-garbled",
            ),
        ],
    )
    def test_reply_never_whole_fails_the_read(
        self, proxy: FaultyProxy, runtime: RuntimeSocket, pattern: str, fault: object, command: str
    ) -> None:
        """Read three times, then the whole read fails (every backend is refused for the cycle)."""
        proxy.inject(pattern, fault)  # type: ignore[arg-type]
        with pytest.raises(TransientError) as failed:
            runtime.read_servers(["api"])
        assert f"HAProxy's reply to `{command}`" in str(failed.value)
        assert "read 3 times" in str(failed.value)
        assert sent(proxy, command) == 3

    def test_one_damaged_reply_is_read_again(
        self, proxy: FaultyProxy, runtime: RuntimeSocket
    ) -> None:
        """A single cut ``help`` costs one more read, nothing else."""
        proxy.inject(HELP, Truncate(lines=20), times=1)
        assert features(runtime).can_change_servers
        assert sent(proxy, "help") == 2

    def test_help_without_a_command_is_read_again_before_it_is_believed(
        self, proxy: FaultyProxy, runtime: RuntimeSocket
    ) -> None:
        """A whole ``help`` lacking ``add server`` once (a garbled line) does not refuse."""
        proxy.inject(HELP, NO_ADD_DEL, times=1)
        assert features(runtime).missing_commands == ()
        assert sent(proxy, "help") == 2

    def test_help_that_keeps_lacking_a_command_is_believed_but_never_kept(
        self, proxy: FaultyProxy, runtime: RuntimeSocket
    ) -> None:
        """Three reads without ``add server``: believed for this read, read again on the next."""
        proxy.inject(HELP, NO_ADD_DEL, times=3)
        assert features(runtime).missing_commands == ("add server", "del server")
        assert features(runtime).missing_commands == ()
        assert sent(proxy, "help") == 4


# -- what the controller does with them ------------------------------------------------------------


@pytest.fixture(name="stack_proxy")
def _stack_proxy(stack: Stack) -> Iterator[FaultyProxy]:
    """A proxy in front of the stack's HAProxy; the controller's settings point at it."""
    with FaultyProxy(stack.haproxy.socket_path) as proxy:
        text = stack.settings.read_text()
        direct = f'socket = "{stack.haproxy.socket_path}"'
        assert direct in text
        stack.settings.write_text(text.replace(direct, f'socket = "{proxy.path}"'))
        yield proxy


def managed_runtime(stack: Stack) -> list[str]:
    """The names of the managed servers HAProxy has."""
    rows = stack.haproxy.command(f"show servers state {BACKEND}").splitlines()[2:]
    return [row.split()[3] for row in rows if row and row.split()[3].startswith(SERVER_PREFIX)]


class TestRefusedRuntimeApi:
    """``reconcile --once`` against a runtime API that cannot add and delete servers."""

    @pytest.mark.parametrize(
        ("fault", "message"),
        [
            pytest.param(
                NO_ADD_DEL,
                "runtime API has no 'add server'/'del server' (`help` does not list it; adding "
                "and deleting servers at runtime needs HAProxy 2.6 or later): upgrade HAProxy, "
                "or remove [haproxy] socket (file edits and reloads only)",
                id="haproxy-before-2.6",
            ),
            pytest.param(
                Refuse("operator"),
                "the HAProxy stats socket is at level operator, which may not add or delete "
                "servers: give its `stats socket` line `level admin` and reload HAProxy, or "
                "remove [haproxy] socket (file edits and reloads only)",
                id="level-operator",
            ),
        ],
    )
    def test_every_backend_is_refused_and_nothing_changes(
        self, stack: Stack, stack_proxy: FaultyProxy, fault: Garble | Refuse, message: str
    ) -> None:
        """Exit 1, the report says what was found and what to do; file and HAProxy untouched."""
        stack_proxy.inject(HELP if isinstance(fault, Garble) else LEVEL, fault)
        before = stack.haproxy.config_path.read_bytes()

        code, report = stack.reconcile_json()

        assert code == 1
        (backend,) = report["backends"]
        assert message in backend["refused"]
        assert report["commands"] == 0
        assert stack.haproxy.config_path.read_bytes() == before
        assert managed_runtime(stack) == []

    def test_enabled_in_server_options(self, stack: Stack) -> None:
        """
        2.6 takes ``enabled`` on a server added at runtime; 3.0 refuses it, and each refused add
        names the option to remove and the backend; nothing is added, no line is written.
        """
        stack.write_settings({"server_options": "check enabled inter 100ms fall 2 rise 1"})

        code, report = stack.reconcile_json()

        if HAProxyBinary.of(stack.haproxy.binary).branch == "2.6":
            assert code == 0
            assert stack.converged()
            return
        assert code == 1
        *refused_adds, refused_backend = report["errors"]
        assert len(refused_adds) == len(stack.cloud.serving(GROUP))
        for error in refused_adds:
            assert error.endswith(
                "refused by HAProxy: 'enabled' option is not accepted for dynamic server (remove "
                f"'enabled' from server_options of [[backend]] '{BACKEND}': this HAProxy does "
                "not take it on servers added at runtime)"
            )
        # The adds waited for their warm-up, so a second cycle ran: it sent no add.
        (backend,) = report["backends"]
        assert refused_backend == f"{BACKEND}: {backend['refused']}"
        assert backend["refused"].endswith(
            "refused 'enabled' of server_options in `add server` (not taken on servers added at "
            f"runtime): remove it from [[backend]] '{BACKEND}', or remove [haproxy] socket (file "
            "edits and reloads only)"
        )
        assert managed_runtime(stack) == []
        assert not any(line.startswith(f"server {SERVER_PREFIX}") for line in stack.file_servers())


class TestRefusedOption:
    """An option ``add server`` refuses: the error names the fix, the process remembers it."""

    def test_unknown_keyword_names_the_option_to_remove(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket
    ) -> None:
        """HAProxy's words, then which option to remove from which backend."""
        line = ServerLine("i-1", "127.0.0.1", 9, 11, ("check", "no-such-keyword"))
        assert features(runtime).refused_options == frozenset()
        with pytest.raises(PermanentError) as refused:
            runtime.add_server("api", line)
        assert str(refused.value) == (
            "add server api/i-1 127.0.0.1:9 id 11 check no-such-keyword refused by HAProxy: "
            "unknown keyword 'no-such-keyword'. (remove 'no-such-keyword' from server_options "
            "of [[backend]] 'api': this HAProxy does not take it on servers added at runtime)"
        )
        assert "api/i-1" not in haproxy.command("show servers state api")
        assert features(runtime).refused_options == {"no-such-keyword"}

    def test_refused_options_are_forgotten_with_the_process(
        self, haproxy: HAProxyProcess, runtime: RuntimeSocket
    ) -> None:
        """A reload may bring another HAProxy, which may take the option: it is tried again."""
        assert features(runtime).refused_options == frozenset()
        line = ServerLine("i-1", "127.0.0.1", 9, 11, ("no-such-keyword",))
        with pytest.raises(PermanentError):
            runtime.add_server("api", line)
        assert features(runtime).refused_options == {"no-such-keyword"}
        haproxy.reload()
        assert features(runtime).refused_options == frozenset()


# -- set server … addr … port … replies ------------------------------------------------------------

# Recorded from HAProxy 2.6.12 and 3.0.11 for `set server api/x addr <ip> port <port>`.
ADDRESS_SET = {
    "2.6-both": "IP changed from '127.0.0.1' to '127.0.0.2', port changed from '80' to '81' by "
    "'stats socket command'",
    "2.6-same": "no need to change the addr, no need to change the port by 'stats socket command'",
    "2.6-port": "no need to change the addr, port changed from '81' to '82' by 'stats socket "
    "command'",
    "2.6-ip": "IP changed from '127.0.0.2' to '127.0.0.3', no need to change the port by 'stats "
    "socket command'",
    "3.0-same": "nothing changed",
    "3.0-port": "port changed from '81' to '82' by 'stats socket command'",
    "3.0-ip": "IP changed from '127.0.0.2' to '127.0.0.3' by 'stats socket command'",
}
ADDRESS_REFUSED = {
    "2.6-invalid": "Invalid addr 'nope' by 'stats socket command'",
    "2.6-port-error": "no need to change the addr, problem converting port 'x' to an int by "
    "'stats socket command'",
    "3.0-invalid": "Invalid addr 'nope'",
    "3.0-port-error": "problem converting port 'x' to an int",
    "ip-and-family": "IP changed from 'a' to 'b', Update for the current server address family is "
    "only supported through configuration file",
    "permission": "Permission denied",
}


class TestAddressReplies:
    """Each version's words for a changed, partly changed or unchanged address."""

    @pytest.mark.parametrize("reply", ADDRESS_SET.values(), ids=ADDRESS_SET.keys())
    def test_success_of_either_version_is_accepted(
        self, proxy: FaultyProxy, runtime: RuntimeSocket, reply: str
    ) -> None:
        """Whatever the version says of the parts it changed or kept."""
        proxy.inject(r"^set server", Refuse(reply))
        runtime.set_address("api", "x", "127.0.0.2", 81)

    @pytest.mark.parametrize("reply", ADDRESS_REFUSED.values(), ids=ADDRESS_REFUSED.keys())
    def test_error_is_refused_even_beside_a_success(
        self, proxy: FaultyProxy, runtime: RuntimeSocket, reply: str
    ) -> None:
        """An error clause refuses the command, with HAProxy's words."""
        proxy.inject(r"^set server", Refuse(reply))
        with pytest.raises(PermanentError) as refused:
            runtime.set_address("api", "x", "127.0.0.2", 81)
        assert str(refused.value).startswith(
            f"set server api/x addr 127.0.0.2 port 81 refused by HAProxy: {reply}"
        )


# -- the planner's refusals (fakes) ----------------------------------------------------------------

COMPLETE = HAProxyFeatures(
    "3.0.11-9e587df", frozenset(HAProxyFeatures.REQUIRED_COMMANDS), None, level="admin"
)


@dataclass
class ReportingRuntime(FakeRuntime):
    """A ``FakeRuntime`` whose reads report *found* as the running HAProxy's features."""

    found: HAProxyFeatures | None = None

    def read_servers(self, backends: Sequence[str]) -> RuntimeObservation:
        """The fake's servers, with *found*."""
        return replace(super().read_servers(backends), features=self.found)


def cycle(world: World, found: HAProxyFeatures | None) -> CycleResult:
    """One cycle of *world* whose runtime reads report *found* (its commands are recorded)."""
    runtime = ReportingRuntime(world.runtime.servers, world.runtime.commands, found=found)
    return run_cycle(world.settings, replace(world.ports, runtime=runtime))


def refusal(world: World, found: HAProxyFeatures | None) -> str | None:
    """The refusal of the world's backend in a cycle whose runtime reads report *found*."""
    (backend,) = cycle(world, found).plan.backends
    return backend.refused


class TestPlannerRefusals:
    """``plan._refusal`` from the features a read reports."""

    @pytest.mark.parametrize(
        "found",
        [
            pytest.param(None, id="not-read"),
            pytest.param(COMPLETE, id="complete"),
            pytest.param(replace(COMPLETE, level=None), id="level-unknown"),
            pytest.param(replace(COMPLETE, refused_options=frozenset({"x"})), id="other-option"),
        ],
    )
    def test_usable_runtime_api_refuses_nothing(self, found: HAProxyFeatures | None) -> None:
        """Features not read (the fakes), or complete: the backend is planned and changed."""
        world = World(group(instance(4)))
        result = cycle(world, found)
        assert result.plan.backends[0].refused is None
        assert result.haproxy == found
        assert world.runtime.commands

    def test_missing_commands_are_named(self) -> None:
        """Each missing command the controller sends, in its order; nothing is sent."""
        world = World(group(instance(4)))
        found = replace(COMPLETE, version="2.4.22", commands=frozenset({"show stat", "help"}))
        refused = refusal(world, found)
        assert refused is not None
        assert refused.startswith(
            "HAProxy 2.4.22's runtime API has no 'add server'/'del server'/'set server'/"
            "'enable health'/'shutdown sessions server'/'show servers state'/'show info' "
        )
        assert world.runtime.commands == []

    @pytest.mark.parametrize("level", ["operator", "user"])
    def test_level_below_admin_names_the_level(self, level: str) -> None:
        """The level found, and the socket line to change."""
        refused = refusal(World(group(instance(4))), replace(COMPLETE, level=level))
        assert refused is not None
        assert refused.startswith(f"the HAProxy stats socket is at level {level},")
        assert "`level admin`" in refused

    def test_refused_option_of_this_backend_refuses_it(self) -> None:
        """An option HAProxy refused in an add, among this backend's: no add is sent again."""
        world = World(group(instance(4)), options="check enabled")
        found = replace(COMPLETE, refused_options=frozenset({"enabled"}))
        assert refusal(world, found) == (
            "HAProxy 3.0.11-9e587df refused 'enabled' of server_options in `add server` (not "
            f"taken on servers added at runtime): remove it from [[backend]] '{BACKEND}', or "
            "remove [haproxy] socket (file edits and reloads only)"
        )
        assert world.runtime.commands == []
