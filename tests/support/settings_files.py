"""Settings files for tests: a valid one, and writing one to disk."""

from __future__ import annotations

from pathlib import Path


VALID = """
[aws]
region = "eu-west-1"

[haproxy]
config = "/etc/haproxy/haproxy.cfg"
socket = "/run/haproxy/admin.sock"
reload_command = "systemctl reload haproxy"

[[backend]]
name = "api"
asg = "int-asg-api"
port = 80
server_prefix = "api-"
server_options = "check inter 3s"
"""


def write(tmp_path: Path, text: str) -> Path:
    """The settings text as a file."""
    path = tmp_path / "reconciler.toml"
    path.write_text(text)
    return path
