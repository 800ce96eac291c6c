"""
The managed lines a backend's config file must hold, with the explicit server ids they carry. Pure.

One line per serving (or launching) instance, nothing else: the lines already in the file keep
their place and their id, new ones follow sorted by name. A doubtful instance's line is written
back exactly as it is.

A line holds the backend's ``server_options``, then the controller's own words: ``weight N`` when
the backend sets weights, ``backup`` when zone routing makes the server a backup. Those change at
runtime without a reload (``set server weight``, or the server added again in its new form).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence

from reconciler.core import config_edit
from reconciler.core.managed_servers import ManagedServers, address, points_at
from reconciler.core.model import Change, ConfigServer, Instance, RuntimeServer, ServerLine
from reconciler.core.settings import Binding


#: The controller's words of an instance's line: its weight (``None``: none) and backup form.
Form = Callable[[Instance], tuple[int | None, bool]]


def first_free_id(file_servers: Sequence[ConfigServer], runtime: Sequence[RuntimeServer]) -> int:
    """
    The first server id a new server may take: above every id in use in the section's
    *file_servers* and in the *runtime* servers, managed or not.

    HAProxy numbers servers without an explicit id with the lowest free ids, so those never exceed
    the number of servers in the section; starting above that and above every id seen keeps the new
    id free in the file and at runtime.
    """
    used = [s.server_id for s in file_servers if s.server_id is not None]
    used += [s.server_id for s in runtime]
    return max([len(file_servers), *used], default=0) + 1


def desired(
    servers: ManagedServers,
    instances: Iterable[Instance],
    first_free: int,
    form: Form | None = None,
) -> tuple[ServerLine, ...]:
    """
    One line per instance: those already in the file first, in file order; *form* gives each
    its weight and backup form (``None``: the backend sets neither).
    """
    binding, file = servers.binding, servers.file
    server_name, port, options = binding.server_name, binding.port, binding.server_options
    by_name = {server_name(i.instance_id): i for i in instances}
    in_file = [n for n in file if n in by_name]
    new = sorted(n for n in by_name if n not in file)
    fresh = itertools.count(first_free)
    running = servers.runtime or {}
    lines = []
    for name in [*in_file, *new]:
        private_ip = by_name[name].private_ip
        assert private_ip is not None  # noqa: S101 - serving and launching imply an address
        # The id it has: at runtime, else in the file.
        kept = running.get(name) or file.get(name)
        server_id = None if kept is None else kept.server_id
        if server_id is None:
            server_id = next(fresh)
        if form is None:
            lines.append(ServerLine(name, private_ip, port, server_id, options))
        else:
            weight, backup = form(by_name[name])
            lines.append(ServerLine(name, private_ip, port, server_id, options, weight, backup))
    return tuple(lines)


def written(
    servers: ManagedServers,
    lines: Sequence[ServerLine],
    kept: Mapping[str, ConfigServer | None],
) -> tuple[ServerLine, ...] | None:
    """
    The managed lines the file must hold: *lines* (in the file's order, new ones last, as
    ``desired`` gives them), and the kept servers' lines unchanged, in the file's order. ``None``
    (the file is left alone this cycle) when a kept line cannot be written back as it is, which
    only a hand-edited line can cause.
    """
    unchanged = []
    for current in (c for c in kept.values() if c is not None):
        line = _as_written(current)
        if line is None:
            return None
        unchanged.append(line)
    if not unchanged:
        return tuple(lines)
    order = {name: index for index, name in enumerate(servers.file)}
    return tuple(sorted([*lines, *unchanged], key=lambda line: order.get(line.name, len(order))))


def needs_reload(servers: ManagedServers, lines: Iterable[ServerLine]) -> bool:
    """
    With a runtime socket, only new options on an existing server need a reload: the
    controller's own words (weight, backup) change at runtime.
    """
    if servers.runtime is None:
        return False
    file, binding = servers.file, servers.binding
    if binding.weights is None and not binding.zone_routing:
        return any(line.options != file[line.name].options for line in lines if line.name in file)
    return any(
        line.options != user_options(file[line.name].options, binding)
        for line in lines
        if line.name in file
    )


def user_options(options: Sequence[str], binding: Binding) -> tuple[str, ...]:
    """
    The words of a file line's *options* that come from ``server_options``: without ``weight N``
    when the backend sets weights, without ``backup`` with zone routing.
    """
    weights, zones = binding.weights is not None, binding.zone_routing
    if not weights and not zones:
        return tuple(options)
    words = iter(options)
    kept = []
    for word in words:
        if weights and word == "weight":
            next(words, None)
        elif not (zones and word == "backup"):
            kept.append(word)
    return tuple(kept)


def change(
    current: ConfigServer | None, line: ServerLine, binding: Binding
) -> tuple[Change, str] | None:
    """How the file's line differs from the desired one, if it does, for a report row."""
    if current is None:
        return Change.ADD, "InService; written to the file"
    if not points_at(current, line):
        return Change.ADDRESS, f"file had {address(current)}"
    if current.options != line.file_options:
        return _options_change(current.options, line, binding)
    if current.server_id != line.server_id:
        return Change.OPTIONS, f"id {line.server_id} written to the file"
    return None


def _options_change(
    written: tuple[str, ...], line: ServerLine, binding: Binding
) -> tuple[Change, str]:
    """How the file's *written* options differ from *line*'s, which they do."""
    if user_options(written, binding) != line.options:
        return Change.OPTIONS, "server_options changed"
    if binding.zone_routing and ("backup" in written) != line.backup:
        form = "a backup" if line.backup else "an active server"
        return Change.ZONE, f"written to the file as {form}"
    if line.weight is None:  # the same words in another order: a hand edit
        return Change.OPTIONS, "server_options changed"
    return Change.WEIGHT, f"weight {line.weight} written to the file"


def _as_written(server: ConfigServer) -> ServerLine | None:
    """*server*'s file line as a ``ServerLine`` meaning the same; ``None`` if none can."""
    if server.port is None:
        return None
    line = ServerLine(server.name, server.address, server.port, server.server_id, server.options)
    try:
        config_edit.line_text(line)
    except ValueError:
        return None
    return line
