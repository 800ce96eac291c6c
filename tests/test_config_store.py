"""The config file store: checked atomic writes and reloads, with the real ``haproxy -c``."""

from __future__ import annotations

import fcntl
import shlex
import stat
from pathlib import Path

import pytest

from harness.haproxy import BackendSpec, HAProxyFactory, HTTPBackends, basic_config, wait_for
from reconciler.adapters.config_store import FileStore
from reconciler.core.errors import ConfigError, PermanentError, TransientError
from reconciler.core.next_config import StoredConfig, Template


def config(*servers: str) -> bytes:
    """A valid haproxy.cfg whose backend ``api`` has *servers*."""
    text = basic_config(
        BackendSpec("api", servers=servers), admin_socket=Path("/run/admin.sock"), port=8080
    )
    return text.encode()


OLD = config("i-1 127.0.0.1:8081")
NEW = config("i-1 127.0.0.1:8081", "i-2 127.0.0.1:8082")


@pytest.fixture(name="check_command")
def _check_command(haproxy_binary: str) -> str:
    """The real check, without ``-q``: HAProxy 2.6 prints nothing at all with it."""
    return f"{shlex.quote(haproxy_binary)} -c -f {{path}}"


@pytest.fixture(name="cfg")
def _cfg(tmp_path: Path) -> Path:
    """A live config file holding ``OLD``, alone in its directory."""
    path = tmp_path / "haproxy.cfg"
    path.write_bytes(OLD)
    return path


@pytest.fixture(name="store")
def _store(cfg: Path, check_command: str) -> FileStore:
    """A store for ``cfg`` with the real check and no reload command."""
    return FileStore(cfg, check_command, None)


def entries(directory: Path) -> set[str]:
    """The names in *directory*."""
    return {entry.name for entry in directory.iterdir()}


#: What a directory holds after writes: the config and the lock file, never a temp file.
CLEAN = {"haproxy.cfg", ".haproxy.cfg.lock"}


class TestReading:
    """What a cycle makes the next file from, read afresh each time."""

    def test_template_mode_reads_the_template_and_the_environment(
        self, tmp_path: Path, cfg: Path
    ) -> None:
        """Each read takes the template and the environment as they are then."""
        template = tmp_path / "haproxy.cfg.j2"
        template.write_text("global\n")
        environ = {"FRONTEND_BIND": ":80"}
        store = FileStore(cfg, "true {path}", None, template=template, environ=environ)
        assert store.read() == StoredConfig(OLD, Template("global\n", {"FRONTEND_BIND": ":80"}))
        template.write_text("global\n    maxconn 10\n")
        environ["FRONTEND_BIND"] = ":8080"
        assert store.read().template == Template(
            "global\n    maxconn 10\n", {"FRONTEND_BIND": ":8080"}
        )

    def test_the_environment_is_the_processes_by_default(
        self, tmp_path: Path, cfg: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without *environ* the template sees the controller's environment."""
        template = tmp_path / "haproxy.cfg.j2"
        template.write_text("global\n")
        monkeypatch.setenv("FRONTEND_BIND", "127.0.0.1:8443")
        read = FileStore(cfg, "true {path}", None, template=template).read().template
        assert isinstance(read, Template)
        assert read.environ["FRONTEND_BIND"] == "127.0.0.1:8443"

    def test_an_unreadable_template_is_a_config_error_naming_it(
        self, tmp_path: Path, cfg: Path
    ) -> None:
        """The file is still read: only the next file waits for a template that can be read."""
        missing = tmp_path / "missing.j2"
        read = FileStore(cfg, "true {path}", None, template=missing).read()
        assert read.file == OLD
        assert isinstance(read.template, ConfigError)
        assert read.template.source == str(missing)
        assert read.template.problems[0].startswith("cannot read the template: ")


class TestWriting:
    """Successful writes."""

    @pytest.mark.haproxy_versions
    def test_write_replaces_the_file_atomically(self, store: FileStore, cfg: Path) -> None:
        """The file holds the new bytes under a new inode, and no temp file is left."""
        before = cfg.stat().st_ino
        store.write(OLD, NEW)
        assert store.read() == StoredConfig(NEW)
        assert cfg.stat().st_ino != before
        assert entries(cfg.parent) == CLEAN

    def test_symlinked_config_replaces_the_target_and_keeps_the_link(
        self, tmp_path: Path, check_command: str
    ) -> None:
        """Writing through a symlink replaces its target; the link stays a link to it."""
        (tmp_path / "real").mkdir()
        (tmp_path / "etc").mkdir()
        target = tmp_path / "real" / "haproxy.cfg"
        target.write_bytes(OLD)
        link = tmp_path / "etc" / "haproxy.cfg"
        link.symlink_to(target)

        FileStore(link, check_command, None).write(OLD, NEW)

        assert link.is_symlink()
        assert link.resolve() == target
        assert target.read_bytes() == NEW
        assert entries(target.parent) == CLEAN
        assert entries(link.parent) == {"haproxy.cfg"}

    def test_mode_is_kept(self, store: FileStore, cfg: Path) -> None:
        """The new file has the permission bits of the one it replaces."""
        cfg.chmod(0o640)
        store.write(OLD, NEW)
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o640


class TestRefusedWrites:
    """Writes that must leave the live file exactly as it was."""

    @pytest.mark.haproxy_versions
    def test_check_failure_reports_haproxy_and_keeps_the_file(
        self, store: FileStore, cfg: Path
    ) -> None:
        """A candidate ``haproxy -c`` rejects is not installed; the error quotes HAProxy."""
        broken = NEW + b"    bogus-keyword\n"
        with pytest.raises(PermanentError) as rejected:
            store.write(OLD, broken)
        message = str(rejected.value)
        assert "unknown keyword 'bogus-keyword' in 'backend' section" in message
        assert "(exit 1), so the live file was left unchanged" in message
        assert "[NOTICE]" not in message
        assert cfg.read_bytes() == OLD
        assert entries(cfg.parent) == CLEAN

    @pytest.mark.haproxy_versions
    def test_valid_config_that_will_not_start_is_refused(self, store: FileStore, cfg: Path) -> None:
        """``haproxy -c`` exit 2 (no listener) is a failure too."""
        listenerless = (
            b"defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n"
            b"    timeout server 1s\nbackend api\n    server i-1 127.0.0.1:8081\n"
        )
        with pytest.raises(PermanentError, match=r"exit 2\).*will not start \(no listener\)"):
            store.write(OLD, listenerless)
        assert cfg.read_bytes() == OLD
        assert entries(cfg.parent) == CLEAN

    def test_quiet_check_explains_nothing_on_haproxy_2_6(
        self, cfg: Path, haproxy_binary: str
    ) -> None:
        """With ``-q`` HAProxy 2.6 prints nothing, so only the exit status is reported."""
        store = FileStore(cfg, f"{shlex.quote(haproxy_binary)} -c -q -f {{path}}", None)
        with pytest.raises(PermanentError, match=r"\(exit 1\), .*: \(no output\)$"):
            store.write(OLD, NEW + b"    bogus-keyword\n")
        assert cfg.read_bytes() == OLD

    def test_file_changed_since_it_was_read(self, store: FileStore, cfg: Path) -> None:
        """When the file no longer holds the expected bytes, nothing is written."""
        theirs = OLD + b"# an operator's edit\n"
        cfg.write_bytes(theirs)
        with pytest.raises(TransientError, match=r"changed while reconciling$"):
            store.write(OLD, NEW)
        assert cfg.read_bytes() == theirs
        assert entries(cfg.parent) == CLEAN

    def test_file_changed_during_the_check(self, cfg: Path, check_command: str) -> None:
        """An edit made while the candidate is being checked is kept, not overwritten."""
        edit = f"printf '# edited\\n' >> {shlex.quote(str(cfg))}"
        racing = f"sh -c {shlex.quote(edit)} {{path}}"
        with pytest.raises(TransientError, match="changed while reconciling"):
            FileStore(cfg, racing, None).write(OLD, NEW)
        assert cfg.read_bytes() == OLD + b"# edited\n"
        assert entries(cfg.parent) == CLEAN

    def test_another_writer_holds_the_lock(self, store: FileStore, cfg: Path) -> None:
        """While another process holds the lock file, the write is retried later."""
        with (cfg.parent / ".haproxy.cfg.lock").open("a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            with pytest.raises(TransientError, match="another process is writing"):
                store.write(OLD, NEW)
        assert cfg.read_bytes() == OLD
        assert entries(cfg.parent) == CLEAN

    def test_check_that_hangs_is_killed(self, cfg: Path) -> None:
        """A check command past its timeout is killed and the write retried later."""
        hanging = FileStore(cfg, "sh -c 'sleep 30' {path}", None, timeout=0.2)
        with pytest.raises(TransientError, match=r"did not finish within 0\.2 s"):
            hanging.write(OLD, NEW)
        assert cfg.read_bytes() == OLD
        assert entries(cfg.parent) == CLEAN

    def test_check_command_that_cannot_run(self, cfg: Path) -> None:
        """A check command that does not exist is reported as such."""
        with pytest.raises(PermanentError, match="cannot run `no-such-haproxy -c -f "):
            FileStore(cfg, "no-such-haproxy -c -f {path}", None).write(OLD, NEW)
        assert cfg.read_bytes() == OLD
        assert entries(cfg.parent) == CLEAN


class TestReloading:
    """The reload command."""

    def test_reload_command_runs_through_the_shell(self, cfg: Path, tmp_path: Path) -> None:
        """Shell syntax works in the reload command."""
        marker = tmp_path / "reloaded"
        command = f"echo $((1 + 1)) > {marker} && test -s {marker}"
        FileStore(cfg, "true {path}", command).reload()
        assert marker.read_text() == "2\n"

    def test_failing_reload_reports_its_output(self, cfg: Path) -> None:
        """A non-zero reload is a ``PermanentError`` with the exit status and the output."""
        store = FileStore(cfg, "true {path}", "echo 'master socket is gone' >&2; exit 3")
        with pytest.raises(PermanentError, match=r"failed \(exit 3\): master socket is gone$"):
            store.reload()

    def test_reload_without_a_command_asks_for_one(self, store: FileStore) -> None:
        """With no reload command the error says how to fix it."""
        with pytest.raises(PermanentError) as missing:
            store.reload()
        assert str(missing.value) == (
            "a reload is needed but [haproxy] reload_command is not set; "
            "set it or reload HAProxy yourself"
        )

    @pytest.mark.haproxy_versions
    def test_written_file_is_served_after_the_reload(
        self,
        haproxy_factory: HAProxyFactory,
        http_backends: HTTPBackends,
        check_command: str,
    ) -> None:
        """A write then a ``kill -USR2`` reload makes the running HAProxy serve the new file."""
        first = http_backends.start("127.0.1.4", name="first")
        second = http_backends.start("127.0.1.5", name="second")
        haproxy = haproxy_factory.create()
        old = haproxy.basic_config(BackendSpec("api", servers=(f"s1 {first.address}",)))
        new = haproxy.basic_config(BackendSpec("api", servers=(f"s1 {second.address}",)))
        haproxy.start(old)
        assert haproxy.get("/") == (200, "hello from first")

        reload = f"kill -USR2 $(cat {haproxy.pid_path})"
        store = FileStore(haproxy.config_path, check_command, reload)
        store.write(old.encode(), new.encode())
        store.reload()

        wait_for(lambda: haproxy.get("/") == (200, "hello from second"), "the new config")
