"""
How a cycle makes the next haproxy.cfg: edited in place, or rendered whole from a template.

``for_settings`` picks the ``FileRenderer`` the settings call for. Both take the file as it is and
the managed servers some backends must now have, and return the next file and whether only a
reload can apply it:

- ``InPlace`` (no ``[haproxy] template``): ``config_edit`` rewrites the managed ``server`` lines and
  keeps every other byte; it never needs a reload by itself.
- ``FromTemplate``: renders the whole file with ``template.render``. Whether anything besides the
  servers changed is computed, not guessed: the template is rendered a second time with the servers
  the file has now, and the file is compared with it. Equal means the template, the settings and
  the environment it uses are unchanged, so the runtime API has already applied everything; a
  difference means a reload. The file is the controller's own: a missing or empty file means no
  HAProxy runs yet (its container waits for the first file), so the first file is planned from AWS
  alone and written without a reload.

The template file is read again for every use, so an edited template takes effect at the next
cycle without a restart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from reconciler.core import config_edit, config_parse, template
from reconciler.core.errors import ConfigError
from reconciler.core.model import ServerLine
from reconciler.core.settings import Settings


@dataclass(frozen=True)
class Rendering:
    """The next file, and whether a reload is needed whatever the runtime API did."""

    content: bytes
    #: Something besides the managed servers changed, which only a reload applies.
    needs_reload: bool = False


class FileRenderer(Protocol):
    """Makes the next config file from the current one."""

    def baseline(self, current: bytes) -> bytes:
        """The config whose sections the planner reads, when the file holds *current*."""
        ...

    def render(self, current: bytes, lines: Mapping[str, Sequence[ServerLine]]) -> Rendering:
        """
        The file after *current*, the managed servers of each backend in *lines* made exactly
        those lines (every other backend keeps the servers it has).

        Raises ``ConfigError`` when the file cannot be made (an unusable template).
        """
        ...


def bootstrapping(settings: Settings, current: bytes) -> bool:
    """
    True when no HAProxy can run from the file *current* yet: in template mode, the file is
    missing (read as empty) or empty, and HAProxy waits for the first one. There is no runtime to
    read then, and nothing to reload.
    """
    return settings.haproxy.template is not None and not current


def for_settings(settings: Settings, environ: Mapping[str, str] | None = None) -> FileRenderer:
    """The renderer *settings* call for; a template sees *environ* (default: ``os.environ``)."""
    if settings.haproxy.template is None:
        return InPlace(settings)
    return FromTemplate(settings, os.environ if environ is None else environ)


class InPlace:
    """Edits the managed ``server`` lines of the file in place; every other byte stays."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def baseline(self, current: bytes) -> bytes:
        """The file itself."""
        return current

    def render(self, current: bytes, lines: Mapping[str, Sequence[ServerLine]]) -> Rendering:
        """*current* edited backend by backend; a server change never needs a reload by itself."""
        content = current
        for backend, wanted in lines.items():
            content = self._edit(content, backend, wanted)
        return Rendering(content)

    def _edit(self, content: bytes, backend: str, wanted: Sequence[ServerLine]) -> bytes:
        binding = self._settings.binding(backend)
        return config_edit.edit(
            content, backend, lambda n: binding.instance_of(n) is not None, wanted
        )


class FromTemplate:
    """Renders the whole file from ``[haproxy] template``."""

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self._settings = settings
        self._environ = environ

    def baseline(self, current: bytes) -> bytes:
        """
        The template rendered with the servers the file has now: the sections the next file
        will have, even when the file is missing or was written from an older template.

        When the template cannot be rendered the file itself is used, so membership changes still
        reach the runtime; ``render`` then reports the error and keeps the file.
        """
        try:
            return self._render(self._text(), current_lines(self._settings, current))
        except ConfigError:
            if not current:
                raise
            return current

    def render(self, current: bytes, lines: Mapping[str, Sequence[ServerLine]]) -> Rendering:
        """The template with the new servers; a reload when it differs from the file elsewhere."""
        text = self._text()
        now = current_lines(self._settings, current)
        content = self._render(text, {**now, **lines})
        if not current:
            return Rendering(content)
        return Rendering(content, needs_reload=self._render(text, now) != current)

    def _text(self) -> str:
        path = self._settings.haproxy.template
        assert path is not None  # noqa: S101 - for_settings only builds this with a template
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"cannot read the template: {exc}"], str(path)) from None

    def _render(self, text: str, lines: Mapping[str, Sequence[ServerLine]]) -> bytes:
        return template.render(text, self._settings, lines, self._environ)


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
