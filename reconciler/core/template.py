"""
Render the whole haproxy.cfg from a jinja2 template (template mode); the only jinja2 user.

The template gets ``backends`` (one ``TemplateBackend`` per ``[[backend]]``, in order),
``admin_socket`` (``[haproxy] socket`` as text, or ``None``) and ``env`` (the environment given by
the caller); the top-level ``haproxy.cfg.j2`` documents them for users. Each managed server is
handed over as its whole ``server`` line from ``config_edit.line_text``, so a server reads the same
in template mode as in a file edited in place, and reading the rendered file back with
``config_parse`` gives the very same ``ServerLine`` values.

Undefined variables are errors (``StrictUndefined``) rather than empty text that would only show
as a strange ``haproxy -c`` message later; nothing is HTML-escaped; blocks and their indentation
leave no blank lines behind (``trim_blocks``, ``lstrip_blocks``).

Pure: text in, bytes out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import jinja2

from reconciler.core import config_edit
from reconciler.core.errors import ConfigError
from reconciler.core.model import ServerLine
from reconciler.core.settings import Settings


# jinja2 names the code it compiles from a string so; its frames carry template line numbers.
_TEMPLATE_FILENAME = "<template>"

#: No loader: templates come in as text only.
_JINJA = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    # A HAProxy config, not HTML: "&&" or "<" must reach HAProxy as written.
    autoescape=False,  # noqa: S701
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class TemplateBackend:
    """What the template knows about one ``[[backend]]``."""

    name: str
    asg: str
    port: int
    #: ``server_prefix``.
    prefix: str
    #: ``server_options`` as one string, as written in the settings.
    options: str
    #: The managed servers, each a whole ``server ...`` line without indentation or end of line.
    servers: tuple[str, ...]


def render(
    template_text: str,
    settings: Settings,
    lines_by_backend: Mapping[str, Sequence[ServerLine]],
    environ: Mapping[str, str],
) -> bytes:
    """
    The config file *template_text* makes, with the managed servers of each backend from
    *lines_by_backend* (a backend missing there has none) and *environ* as ``env``.

    Raises ``ConfigError`` naming the template and the line of any jinja2 error.
    """
    socket = settings.haproxy.socket
    try:
        text = _JINJA.from_string(template_text).render(
            backends=_backends(settings, lines_by_backend),
            admin_socket=None if socket is None else str(socket),
            env=dict(environ),
        )
    except jinja2.TemplateError as exc:
        raise ConfigError([_describe(exc)], str(settings.haproxy.template or "template")) from None
    # HAProxy 2.6 refuses a file whose last line has no LF.
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def _backends(
    settings: Settings, lines_by_backend: Mapping[str, Sequence[ServerLine]]
) -> list[TemplateBackend]:
    """What the template knows about each ``[[backend]]``, in order."""
    return [
        TemplateBackend(
            name=binding.name,
            asg=binding.asg,
            port=binding.port,
            prefix=binding.server_prefix,
            options=" ".join(binding.server_options),
            servers=tuple(
                config_edit.line_text(line) for line in lines_by_backend.get(binding.name, ())
            ),
        )
        for binding in settings.backends
    ]


def _describe(exc: jinja2.TemplateError) -> str:
    """The error with the template line it happened on, when known."""
    line = getattr(exc, "lineno", None) or _template_line(exc.__traceback__)
    where = f"line {line}: " if line else ""
    return f"{where}{exc.message or type(exc).__name__}"


def _template_line(trace: TracebackType | None) -> int | None:
    """The template line of the innermost frame that runs template code, if any."""
    line = None
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line
