"""
The managed haproxy.cfg on disk, and the command that reloads HAProxy.

A write never leaves a half-written, unchecked or foreign file behind:

1. the real file is found through symlinks, so a link such as ``/etc/haproxy/haproxy.cfg ->
   /srv/cfg/haproxy.cfg`` is kept and its target replaced;
2. an adjacent hidden lock file (``.<name>.lock``) is ``flock``-ed, so two writers never interleave;
3. the file must still hold the bytes the cycle planned from, else someone else wrote it and the
   cycle is retried against the new content;
4. the new bytes go to a hidden temp file in the same directory (``os.replace`` is only atomic
   within one filesystem, and a hidden name without ``.cfg`` is never loaded by ``haproxy -f
   <dir>``), flushed to disk, with the original's mode (and owner when running as root);
5. ``check_command`` (``haproxy -c``) validates the temp file; any non-zero exit, including 2
   ("valid but will not start"), keeps the live file;
6. the original is compared once more, then replaced, and the directory entry is synced.

The temp file is removed on every path that does not rename it. A store made with a ``template``
(template mode, where the file is the controller's own) reads a missing file as empty, and its
first write creates the file, mode 0644; without one, a missing file is a ``ConfigError`` (it is
not transient). Each ``read`` also reads the template and takes the environment as it is then, so
an edited template takes effect at the next cycle.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shlex
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from reconciler.core.errors import ConfigError, PermanentError, TransientError
from reconciler.core.next_config import StoredConfig, Template


#: Seconds the check or reload command may run before it is killed.
DEFAULT_TIMEOUT = 60.0
#: Characters of a command's output kept in an error message.
OUTPUT_LIMIT = 2000
#: The mode of a file ``create`` makes: HAProxy may run as another user of the group.
NEW_FILE_MODE = 0o644
_NO_FILE = (
    "no such file; point [haproxy] config at HAProxy's configuration file, or set [haproxy] "
    "template to have the controller write it"
)
_NO_RELOAD_COMMAND = (
    "a reload is needed but [haproxy] reload_command is not set; set it or reload HAProxy yourself"
)


class FileStore:
    """
    ``reconciler.ports.ConfigStore`` for the file at *path*.

    *check_command* is split like a shell would (no shell runs it) and every ``{path}`` in it is
    replaced by the candidate file. *reload_command* runs through ``/bin/sh -c``, so it may use
    ``$(...)``, pipes and ``&&`` (``kill -USR2 $(cat /run/haproxy.pid)``); ``None`` means the user
    reloads HAProxy themselves. Each command is killed, with the processes it started, after
    *timeout* seconds. With a *template* (template mode) the file is made from it and *environ*:
    a missing file reads as ``b""`` and a write expecting ``b""`` creates it.
    """

    def __init__(
        self,
        path: Path,
        check_command: str,
        reload_command: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        template: Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._path = path
        self._check_command = check_command
        self._reload_command = reload_command
        self._timeout = timeout
        self._template = template
        self._environ = environ

    def read(self) -> StoredConfig:
        """The file's current bytes and, in template mode, the template and the environment."""
        return StoredConfig(self._read_file(), self._read_template())

    def _read_file(self) -> bytes:
        try:
            return self._path.read_bytes()
        except FileNotFoundError:
            if self._template is not None:
                return b""
            # Not transient: nothing the controller does will make the file appear.
            raise ConfigError([_NO_FILE], str(self._path)) from None
        except OSError as exc:
            raise TransientError(f"cannot read {self._path} ({exc.strerror})") from exc

    def _read_template(self) -> Template | ConfigError | None:
        """
        The template with a copy of the environment, or the error as a value: a template that
        cannot be read stops only the next file, never the cycle's runtime changes.
        """
        if self._template is None:
            return None
        try:
            text = self._template.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return ConfigError([f"cannot read the template: {exc}"], str(self._template))
        return Template(text, dict(self._environ))

    def write(self, expected: bytes, new: bytes) -> None:
        """Replace the file with *new* if it still holds *expected* and the check accepts *new*."""
        target = Path(os.path.realpath(self._path))
        temp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with _exclusive(target.with_name(f".{target.name}.lock"), self._path):
                self._require_unchanged(target, expected)
                try:
                    _write_like(temp, new, like=target)
                    self._check(temp)
                    self._require_unchanged(target, expected)
                    temp.replace(target)
                finally:
                    temp.unlink(missing_ok=True)
                _sync_directory(target.parent)
        except OSError as exc:
            raise PermanentError(f"cannot write {self._path}: {exc}") from exc

    def reload(self) -> None:
        """Run the reload command through ``/bin/sh -c``."""
        if self._reload_command is None:
            raise PermanentError(_NO_RELOAD_COMMAND)
        code, output = _run(["/bin/sh", "-c", self._reload_command], self._timeout)
        if code != 0:
            raise PermanentError(
                f"the reload command `{self._reload_command}` failed (exit {code}): {_trim(output)}"
            )

    def _require_unchanged(self, target: Path, expected: bytes) -> None:
        try:
            unchanged = target.read_bytes() == expected
        except FileNotFoundError:
            unchanged = self._template is not None and not expected
        if not unchanged:
            raise TransientError(f"{self._path} changed while reconciling")

    def check_live(self) -> tuple[int, str] | None:
        """
        Run the check command on the file as it is (``reconcile check``): ``None`` when it
        accepts the file, else its exit code and what it said, [NOTICE] lines left out.
        """
        return self._rejection(self._path)

    def _check(self, candidate: Path) -> None:
        rejected = self._rejection(candidate)
        if rejected is not None:
            code, alerts = rejected
            raise PermanentError(
                f"`{self._check_command}` rejected the new {self._path} (exit {code}), so the live "
                f"file was left unchanged: {_trim(alerts)}"
            )

    def _rejection(self, candidate: Path) -> tuple[int, str] | None:
        """The check command's exit code and alerts when it rejects *candidate*, else ``None``."""
        words = [
            word.replace("{path}", str(candidate)) for word in shlex.split(self._check_command)
        ]
        code, output = _run(words, self._timeout)
        if code == 0:
            return None
        # HAProxy opens every report with its version and path as [NOTICE] lines.
        lines = output.splitlines()
        return code, "\n".join(line for line in lines if not line.startswith("[NOTICE]"))


@contextlib.contextmanager
def _exclusive(lock: Path, shown: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on *lock*, or fail at once when another writer has it."""
    # Read-only is enough for flock, and lets writers running as other users share the lock file.
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            msg = f"another process is writing {shown} (it holds {lock})"
            raise TransientError(msg) from None
        yield
    finally:
        # Closing the descriptor releases the lock. The file stays: removing it would let a
        # waiting writer lock an unlinked inode while a third one creates a fresh file.
        os.close(fd)


def _write_like(path: Path, data: bytes, *, like: Path) -> None:
    """
    Create *path* with *data*, durable on disk, with the mode (and, as root, owner) of *like*, or
    ``NEW_FILE_MODE`` when *like* does not exist.
    """
    try:
        original: os.stat_result | None = like.stat()
    except FileNotFoundError:
        original = None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fchmod(fd, NEW_FILE_MODE if original is None else stat.S_IMODE(original.st_mode))
        if original is not None and os.geteuid() == 0:
            os.fchown(fd, original.st_uid, original.st_gid)
        os.fsync(fd)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run(args: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run *args* and return its exit code and combined output."""
    shown = shlex.join(args)
    # Output goes to a file, not a pipe: a daemon started by a reload command may keep its
    # inherited stdout open forever, and reading a pipe to its end would wait for it.
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise PermanentError(f"cannot run `{shown}`: {exc.strerror}") from exc
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            # The command's own session: a shell's children go too, nothing else does.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise TransientError(
                f"`{shown}` did not finish within {timeout:g} s and was killed"
            ) from None
        output.seek(0)
        return code, output.read().decode("utf-8", errors="replace")


def _trim(text: str) -> str:
    text = text.strip()
    if not text:
        return "(no output)"
    return text if len(text) <= OUTPUT_LIMIT else f"{text[:OUTPUT_LIMIT]} [...]"
