"""Settings: a valid file loads, environment variables override, and every problem is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import settings
from reconciler.errors import ConfigError


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


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[str, ...]:
    """The problems a ConfigError lists for *text*."""
    with pytest.raises(ConfigError) as caught:
        settings.load(write(tmp_path, text), env or {})
    return caught.value.problems


def test_valid_file_loads_every_key(tmp_path: Path) -> None:
    """Every documented key ends up in the frozen settings."""
    loaded = settings.load(write(tmp_path, VALID), {})
    assert loaded.aws.region == "eu-west-1"
    assert loaded.haproxy.socket == Path("/run/haproxy/admin.sock")
    assert loaded.haproxy.check_command == "haproxy -c -f {path}"
    (api,) = loaded.backends
    assert api.server_options == ("check", "inter", "3s")
    assert api.server_name("i-0123456789abcdef0") == "api-i-0123456789abcdef0"
    assert api.drain_timeout == 30


def test_environment_overrides_single_sections(tmp_path: Path) -> None:
    """RECONCILER_<SECTION>_<KEY> wins over the file."""
    env = {"RECONCILER_HAPROXY_SOCKET": "/tmp/other.sock", "RECONCILER_AWS_REGION": "us-east-1"}
    loaded = settings.load(write(tmp_path, VALID), env)
    assert loaded.haproxy.socket == Path("/tmp/other.sock")
    assert loaded.aws.region == "us-east-1"


def test_config_path_resolution() -> None:
    """--config beats RECONCILER_CONFIG beats ./reconciler.toml."""
    assert settings.config_path("a.toml", {"RECONCILER_CONFIG": "b.toml"}) == Path("a.toml")
    assert settings.config_path(None, {"RECONCILER_CONFIG": "b.toml"}) == Path("b.toml")
    assert settings.config_path(None, {}) == Path("reconciler.toml")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(("port = 80", "port = 70000"), "out of range", id="port-range"),
        pytest.param(("port = 80", 'port = "80"'), "must be a whole number", id="port-type"),
        pytest.param(('name = "api"', 'nmae = "api"'), "unknown key", id="typo"),
        pytest.param(('asg = "int-asg-api"\n', ""), "asg: required", id="missing-asg"),
        pytest.param(("check inter 3s", "check cookie x"), "cookie", id="refused-option"),
        pytest.param(("check inter 3s", "check id 4"), "'id'", id="id-option"),
        pytest.param(('server_prefix = "api-"', 'server_prefix = "a b"'), "prefix", id="prefix"),
        pytest.param(
            ('reload_command = "systemctl reload haproxy"', 'check_command = "haproxy -c"'),
            "{path}",
            id="check-without-path",
        ),
    ],
)
def test_one_bad_key_is_named(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    """Each mutation of the valid file is reported with its key."""
    text = VALID.replace(*change)
    assert text != VALID
    assert any(expected in p for p in problems_of(tmp_path, text))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes give one error listing all of them."""
    text = VALID.replace("port = 80", "port = 0").replace('region = "eu-west-1"', "region = 5")
    text += '\n[[backend]]\nname = "api"\nasg = "x"\nport = 81\n[bogus]\n'
    found = problems_of(tmp_path, text)
    assert any("port" in p for p in found)
    assert any("aws.region" in p for p in found)
    assert any("declared twice" in p for p in found)
    assert any("bogus" in p for p in found)


def test_unparsable_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    """Broken TOML and a missing file both raise ConfigError naming the file."""
    assert any("not valid TOML" in p for p in problems_of(tmp_path, "[aws\n"))
    with pytest.raises(ConfigError, match="no such file"):
        settings.load(tmp_path / "absent.toml", {})


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    """A typo in an override variable is reported with the variable's name."""
    found = problems_of(tmp_path, VALID, {"RECONCILER_HAPROXY_SOKET": "/x"})
    assert any("RECONCILER_HAPROXY_SOKET" in p for p in found)


def test_managed_names_need_the_prefix_and_an_instance_id() -> None:
    """Only <prefix><instance-id> names are managed."""
    binding = settings.Binding("api", "asg", 80, server_prefix="api-")
    assert binding.instance_of("api-i-0123456789abcdef0") == "i-0123456789abcdef0"
    assert binding.instance_of("api-i-01234567") == "i-01234567"
    assert binding.instance_of("api-backup") is None
    assert binding.instance_of("web-i-0123456789abcdef0") is None
