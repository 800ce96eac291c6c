"""
The next haproxy.cfg of a cycle: its managed servers edited in place, or the whole file made from a
template.

A cycle reads its inputs once, through the store: a ``StoredConfig`` holds the file as it is and,
in template mode, the template's text with the environment it sees. ``for_cycle`` turns that read
into the ``NextFileMaker`` the cycle consults twice: when observing, for the config whose sections
the planner reads (``sections``, parsed once into ``config``), and when applying, for the file after
the runtime steps (``next_file``). What depends on the read alone is decided once, in ``for_cycle``.

- ``EditInPlace`` (no ``[haproxy] template``): ``config_edit`` rewrites the managed ``server``
  lines and keeps every other byte; it never needs a reload by itself. The file is parsed once a
  cycle: the sections the planner read are the ones the editor edits.
- ``FromTemplate``: the whole file is ``template.render``'s. Whether anything besides the servers
  changed is computed, not guessed: the template rendered with the servers the file has now is
  compared with the file. Equal means the template, the settings and the environment it uses are
  unchanged, so the runtime API has already applied everything; a difference means a reload. That
  render is also what the planner reads, and the next file when the servers stay as they are, so a
  cycle renders once, or twice when servers change. The file is the controller's own: a missing or
  empty file means no HAProxy runs yet (its container waits for the first file), so the first file
  is planned from AWS alone and written without a reload.

Pure: the store reads the template afresh every cycle, so an edited template takes effect at the
next cycle without a restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from reconciler.core import config_edit, config_parse, template
from reconciler.core.errors import ConfigError
from reconciler.core.model import ConfigBackend, ServerLine
from reconciler.core.settings import Settings


@dataclass(frozen=True)
class Template:
    """``[haproxy] template`` as one cycle read it."""

    text: str
    #: The environment the template sees as ``env``.
    environ: Mapping[str, str]


@dataclass(frozen=True)
class StoredConfig:
    """What the store read for one cycle."""

    #: The file's bytes (``b""`` for a missing file in template mode).
    file: bytes
    #: ``None`` edits the file in place. A ``ConfigError`` says why the template could not be read:
    #: the cycle still plans from the file, and reports the error when it makes the next one.
    template: Template | ConfigError | None = None


@dataclass(frozen=True)
class NextFile:
    """The next file, and whether a reload is needed whatever the runtime API did."""

    content: bytes
    #: Something besides the managed servers changed, which only a reload applies.
    needs_reload: bool = False


class NextFileMaker(Protocol):
    """Makes the next config file from what one cycle read."""

    @property
    def current(self) -> bytes:
        """The file as the cycle read it."""
        ...

    @property
    def sections(self) -> bytes:
        """The config whose sections the planner reads."""
        ...

    @property
    def config(self) -> Mapping[str, ConfigBackend]:
        """
        The configured backends' sections of ``sections``, parsed (a backend ``sections`` lacks
        is absent): what the planner reads.
        """
        ...

    @property
    def bootstrapping(self) -> bool:
        """
        True when no HAProxy can run from the file yet: in template mode, the file is missing
        (read as empty) or empty, and HAProxy waits for the first one. There is no runtime to
        read then, and nothing to reload.
        """
        ...

    def next_file(self, lines: Mapping[str, Sequence[ServerLine]]) -> NextFile:
        """
        The file after ``current``, the managed servers of each backend in *lines* made exactly
        those lines (every other backend keeps the servers it has).

        Raises ``ConfigError`` when the file cannot be made (an unusable template).
        """
        ...


def for_cycle(settings: Settings, stored: StoredConfig) -> NextFileMaker:
    """
    The maker for a cycle that read *stored*: a template when the store read one.

    Raises ``ConfigError`` when the template cannot be used and there is no file to plan from.
    """
    if stored.template is None:
        return EditInPlace(settings, stored.file)
    return FromTemplate.decide(settings, stored.file, stored.template)


@dataclass(frozen=True)
class EditInPlace:
    """Edits the managed ``server`` lines of the file in place; every other byte stays."""

    settings: Settings
    current: bytes

    @property
    def sections(self) -> bytes:
        """The file itself."""
        return self.current

    @cached_property
    def document(self) -> config_parse.Document:
        """The file, parsed: for the planner's sections and for the editor."""
        return config_parse.parse(self.current)

    @cached_property
    def config(self) -> Mapping[str, ConfigBackend]:
        """The configured backends' sections of the file."""
        return configured_sections(self.settings, self.document)

    @property
    def bootstrapping(self) -> bool:
        """Never: the user's file exists before the controller starts."""
        return False

    def next_file(self, lines: Mapping[str, Sequence[ServerLine]]) -> NextFile:
        """
        The file with each backend's servers edited; a server change never needs a reload by
        itself. Every backend is edited in the one parse of the file the planner read.
        """
        replaced: dict[int, bytes] = {}
        for backend, wanted in lines.items():
            managed = self.settings.binding(backend).managed_name.fullmatch
            found = self.config.get(backend)
            replaced |= config_edit.replacements(self.document, backend, found, managed, wanted)
        if not replaced:
            return NextFile(self.current)
        return NextFile(config_edit.spliced(self.document, replaced))


@dataclass(frozen=True)
class FromTemplate:
    """Makes the whole file from ``[haproxy] template``; build it with ``decide``."""

    settings: Settings
    current: bytes
    template: Template | ConfigError
    #: The managed servers the file holds now, per configured backend.
    servers: Mapping[str, tuple[ServerLine, ...]]
    #: The template rendered with ``servers``, or why it cannot be rendered.
    now: bytes | ConfigError
    #: The file differs from ``now``: something besides the servers changed.
    needs_reload: bool

    @classmethod
    def decide(
        cls, settings: Settings, current: bytes, source: Template | ConfigError
    ) -> FromTemplate:
        """Render *source* once with the servers of *current*, and decide on a reload."""
        servers = current_lines(settings, current)
        now: bytes | ConfigError
        try:
            now = _render(source, settings, servers)
        except ConfigError as exc:
            if not current:
                raise
            now = exc
        reload = bool(current) and isinstance(now, bytes) and now != current
        return cls(settings, current, source, servers, now, reload)

    @property
    def sections(self) -> bytes:
        """
        The template rendered with the servers the file has now: the sections the next file will
        have, even when the file is missing or was written from an older template.

        When the template cannot be rendered the file itself is used, so membership changes still
        reach the runtime; ``next_file`` then reports the error and keeps the file.
        """
        return self.current if isinstance(self.now, ConfigError) else self.now

    @cached_property
    def config(self) -> Mapping[str, ConfigBackend]:
        """The configured backends' sections of ``sections``."""
        return configured_sections(self.settings, config_parse.parse(self.sections))

    @property
    def bootstrapping(self) -> bool:
        """The file is missing or empty."""
        return not self.current

    def next_file(self, lines: Mapping[str, Sequence[ServerLine]]) -> NextFile:
        """The template with the new servers; a reload when it differs from the file elsewhere."""
        servers = {**self.servers, **{backend: tuple(wanted) for backend, wanted in lines.items()}}
        if servers == self.servers and isinstance(self.now, bytes):
            content = self.now
        else:
            content = _render(self.template, self.settings, servers)
        if isinstance(self.now, ConfigError):
            # The file's own servers do not render: what the reload decision needs is missing.
            raise self.now
        return NextFile(content, self.needs_reload)


def _render(
    source: Template | ConfigError,
    settings: Settings,
    servers: Mapping[str, Sequence[ServerLine]],
) -> bytes:
    if isinstance(source, ConfigError):
        raise source
    return template.render(source.text, settings, servers, source.environ)


def configured_sections(
    settings: Settings, document: config_parse.Document
) -> dict[str, ConfigBackend]:
    """The section of every configured backend that *document* has, by name."""
    found = (
        (binding.name, config_parse.backend(document, binding.name))
        for binding in settings.backends
    )
    return {name: section for name, section in found if section is not None}


def current_lines(settings: Settings, data: bytes) -> dict[str, tuple[ServerLine, ...]]:
    """
    The managed servers of every configured backend in the file *data*, as ``ServerLine``s in
    file order; a backend the file lacks has none.

    A managed line the template could not have written (no numeric port, a word that needs
    quoting) was edited by hand and is left out: the file then differs from any render, so the
    template's own file replaces it with a reload.
    """
    document = config_parse.parse(data)
    found: dict[str, tuple[ServerLine, ...]] = {}
    for binding in settings.backends:
        section = config_parse.backend(document, binding.name)
        servers = () if section is None else section.servers
        lines = (
            ServerLine(s.name, s.address, s.port, s.server_id, s.options)
            for s in servers
            if binding.instance_of(s.name) is not None and s.port is not None
        )
        found[binding.name] = tuple(line for line in lines if _writable(line))
    return found


def _writable(line: ServerLine) -> bool:
    """``config_edit.line_text`` can write *line*."""
    try:
        config_edit.line_text(line)
    except ValueError:
        return False
    return True
