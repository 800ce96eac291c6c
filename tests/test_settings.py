"""Settings: a valid file loads, environment variables override, and every problem is reported."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from reconciler.adapters import settings_file
from reconciler.core import settings
from reconciler.core.errors import ConfigError
from tests.support.settings_files import VALID, write


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[str, ...]:
    """The problems a ConfigError lists for *text*."""
    with pytest.raises(ConfigError) as caught:
        settings_file.load(write(tmp_path, text), env or {})
    return caught.value.problems


def test_valid_file_loads_every_key(tmp_path: Path) -> None:
    """Every documented key ends up in the frozen settings."""
    loaded = settings_file.load(write(tmp_path, VALID), {})
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
    loaded = settings_file.load(write(tmp_path, VALID), env)
    assert loaded.haproxy.socket == Path("/tmp/other.sock")
    assert loaded.aws.region == "us-east-1"


def test_image_defaults_yield_to_the_file_and_to_overrides(tmp_path: Path) -> None:
    """RECONCILER_DEFAULT_<SECTION>_<KEY> applies where neither the file nor an override says."""
    defaults = {
        "RECONCILER_DEFAULT_SERVER_LISTEN": "0.0.0.0:9100",
        "RECONCILER_DEFAULT_AWS_REGION": "us-east-1",
    }
    loaded = settings_file.load(write(tmp_path, VALID), defaults)
    assert loaded.server.listen == "0.0.0.0:9100"
    assert loaded.aws.region == "eu-west-1"
    in_file = settings_file.load(
        write(tmp_path, VALID + '[server]\nlisten = "127.0.0.1:8000"\n'), defaults
    )
    assert in_file.server.listen == "127.0.0.1:8000"
    overridden = {**defaults, "RECONCILER_SERVER_LISTEN": "127.0.0.2:8001"}
    assert settings_file.load(write(tmp_path, VALID), overridden).server.listen == "127.0.0.2:8001"
    # An empty override turns the listener off.
    off = {**defaults, "RECONCILER_SERVER_LISTEN": ""}
    assert settings_file.load(write(tmp_path, VALID), off).server.listen is None


def test_bad_image_default_names_its_variable(tmp_path: Path) -> None:
    """A default variable with a typo or a bad value is reported with the variable's name."""
    env = {
        "RECONCILER_DEFAULT_SERVER_LISTN": "0.0.0.0:9100",
        "RECONCILER_DEFAULT_CONTROLLER_RESYNC_INTERVAL": "0",
    }
    found = problems_of(tmp_path, VALID, env)
    assert any("(from RECONCILER_DEFAULT_SERVER_LISTN)" in p for p in found), found
    interval = "controller.resync_interval (from RECONCILER_DEFAULT_CONTROLLER_RESYNC_INTERVAL)"
    assert any(p.startswith(interval) for p in found), found


def test_config_path_resolution() -> None:
    """--config beats RECONCILER_CONFIG beats ./reconciler.toml."""
    assert settings_file.config_path("a.toml", {"RECONCILER_CONFIG": "b.toml"}) == Path("a.toml")
    assert settings_file.config_path(None, {"RECONCILER_CONFIG": "b.toml"}) == Path("b.toml")
    assert settings_file.config_path(None, {}) == Path("reconciler.toml")


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


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(('name = "api"', 'name = "api\\n"'), "name", id="name"),
        pytest.param(
            ('server_prefix = "api-"', 'server_prefix = "api-\\n"'), "prefix", id="prefix"
        ),
        pytest.param(('asg = "int-asg-api"', 'asg = "int-asg-api\\n"'), "asg", id="asg"),
        pytest.param(
            ("[haproxy]\n", '[haproxy]\nzone = "eu-west-1a\\n"\n'), "haproxy.zone", id="zone"
        ),
    ],
)
def test_a_trailing_newline_is_no_name(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    """A name that ends in a newline is refused like any other character it may not hold."""
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
    huge = VALID.replace("port = 80", "port = " + "9" * 5000)
    assert any("not valid TOML" in p for p in problems_of(tmp_path, huge))
    with pytest.raises(ConfigError, match="no such file"):
        settings_file.load(tmp_path / "absent.toml", {})


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


# -- numeric ranges --------------------------------------------------------------------------------

#: Every numeric key, as ``<section>.<key>`` (``backend`` for the keys of each ``[[backend]]``).
NUMERIC_KEYS = sorted(settings.LIMITS)
#: Values no range accepts: not finite, absurdly large, negative.
ABSURD = [math.inf, -math.inf, math.nan, 1e308, -1.0, 10**30, 10**400]


def raw_with(key: str, value: object) -> dict[str, Any]:
    """The decoded TOML of the valid file with *key* (``<section>.<key>``) set to *value*."""
    raw = tomllib.loads(VALID)
    section, name = key.split(".")
    if section == "backend":
        raw["backend"][0][name] = value
    else:
        raw.setdefault(section, {})[name] = value
    return raw


def env_var(key: str) -> str:
    """The override variable of *key* (only single sections have one)."""
    section, name = key.split(".")
    return f"RECONCILER_{section.upper()}_{name.upper()}"


def loaded_value(loaded: settings.Settings, key: str) -> object:
    """The value *key* ended up with."""
    section, name = key.split(".")
    holder = loaded.backends[0] if section == "backend" else getattr(loaded, section)
    return getattr(holder, name)


def named(key: str) -> str:
    """How a problem names *key* of the valid file."""
    section, name = key.split(".")
    return f"backend 'api'.{name}" if section == "backend" else key


def assert_within_or_named(key: str, raw: dict[str, Any], env: dict[str, str]) -> None:
    """Either the settings load with *key* finite and in range, or a problem names the key."""
    problems: tuple[str, ...] = ()
    try:
        loaded = settings.parse(raw, env, source="test.toml")
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        assert any(p.startswith(named(key)) for p in problems), problems
        return
    value = loaded_value(loaded, key)
    limits = settings.LIMITS[key]
    assert isinstance(value, int | float)
    assert not isinstance(value, bool)
    assert math.isfinite(value)
    assert limits.low <= value <= limits.high
    if limits.whole:
        assert isinstance(value, int)


@given(
    key=st.sampled_from(NUMERIC_KEYS),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.integers(),
        st.integers(min_value=10**308),
        st.booleans(),
        st.text(max_size=5),
    ),
)
def test_any_numeric_value_in_the_file_is_in_range_or_named(key: str, value: object) -> None:
    """Whatever TOML decodes to, a numeric key ends up finite and within its range, or named."""
    assert_within_or_named(key, raw_with(key, value), {})


@given(
    key=st.sampled_from([k for k in NUMERIC_KEYS if not k.startswith("backend.")]),
    text=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers().map(str),
        st.sampled_from(["nan", "NaN", "-inf", "Infinity", "1e999", "1_000", " 5 ", "0x10"]),
        st.text(max_size=8),
    ),
)
def test_any_numeric_environment_value_is_in_range_or_named(key: str, text: str) -> None:
    """Whatever an override variable says, the key ends up finite and within range, or named."""
    # Text with a NUL cannot be in a real environment; everything else can.
    assume("\x00" not in text)
    assert_within_or_named(key, raw_with("aws.region", "eu-west-1"), {env_var(key): text})


@pytest.mark.parametrize("key", NUMERIC_KEYS)
@pytest.mark.parametrize("value", ABSURD, ids=lambda v: repr(v)[:12])
def test_absurd_values_are_named_with_their_range(key: str, value: float) -> None:
    """inf, nan, 1e308, negative values: a problem naming the key and the range to use."""
    with pytest.raises(ConfigError) as caught:
        settings.parse(raw_with(key, value), {}, source="test.toml")
    limits = settings.LIMITS[key]
    (problem,) = [p for p in caught.value.problems if p.startswith(named(key))]
    assert f"{limits.low:g} to {limits.high:g}" in problem


def test_every_range_problem_is_reported_at_once() -> None:
    """Several keys out of range, from the file and from the environment: one error, all named."""
    raw = raw_with("controller.resync_interval", math.inf)
    raw["backend"][0]["drain_timeout"] = -1
    env = {"RECONCILER_CONTROLLER_POLL_INTERVAL": "nan", "RECONCILER_SQS_WAIT_SECONDS": "21"}
    with pytest.raises(ConfigError) as caught:
        settings.parse(raw, env, source="test.toml")
    found = caught.value.problems
    assert any(p.startswith("controller.resync_interval: inf") for p in found), found
    assert any(p.startswith("backend 'api'.drain_timeout: -1") for p in found), found
    poll = "controller.poll_interval (from RECONCILER_CONTROLLER_POLL_INTERVAL)"
    assert any(p.startswith(poll) for p in found), found
    assert any(p.startswith("sqs.wait_seconds (from RECONCILER_SQS_WAIT_SECONDS)") for p in found)


# -- weights and zone routing ----------------------------------------------------------------------

ROUTED = VALID.replace("[aws]", "[aws]").replace(
    'reload_command = "systemctl reload haproxy"',
    'reload_command = "systemctl reload haproxy"\nzone = "eu-west-1a"',
)


def test_weights_and_zone_routing_load(tmp_path: Path) -> None:
    """A weights table, default_weight, zone routing and its threshold end up in the binding."""
    text = ROUTED + (
        "zone_routing = true\nzone_threshold = 0.5\ndefault_weight = 3\n"
        '[backend.weights]\n"c5.large" = 10\n"c5.4xlarge" = 80\n'
    )
    loaded = settings_file.load(write(tmp_path, text), {})
    assert loaded.haproxy.zone == "eu-west-1a"
    (api,) = loaded.backends
    assert api.weights == settings.Weights(
        capacity=False, table={"c5.large": 10, "c5.4xlarge": 80}, default=3
    )
    assert (api.zone_routing, api.zone_threshold) == (True, 0.5)
    capacity = settings_file.load(write(tmp_path, VALID + 'weight = "capacity"\n'), {})
    assert capacity.backends[0].weights == settings.Weights(capacity=True)
    assert capacity.backends[0].zone_routing is False
    assert capacity.haproxy.zone is None


def test_zone_auto_and_its_override(tmp_path: Path) -> None:
    """zone = "auto" is kept for the runner to resolve; RECONCILER_HAPROXY_ZONE overrides."""
    auto = settings_file.load(write(tmp_path, ROUTED.replace("eu-west-1a", "auto")), {})
    assert auto.haproxy.zone == settings.AUTO_ZONE
    env = {"RECONCILER_HAPROXY_ZONE": "us-east-1c"}
    assert settings_file.load(write(tmp_path, ROUTED), env).haproxy.zone == "us-east-1c"


@pytest.mark.parametrize(
    ("added", "expected"),
    [
        pytest.param(
            "weight = 10\n",
            "backend 'api'.weight: 10 is not a weight source; use weight = \"capacity\"",
            id="weight-number",
        ),
        pytest.param(
            'weight = "cpu"\n', "backend 'api'.weight: 'cpu' is not a weight source", id="weight"
        ),
        pytest.param(
            'weight = "capacity"\n[backend.weights]\n"c5.large" = 10\n',
            "backend 'api'.weight: set weight = \"capacity\" or [backend.weights], not both",
            id="both",
        ),
        pytest.param(
            '[backend.weights]\n"c5.large" = 257\n',
            "backend 'api'.weights.'c5.large': 257 is out of range; use a whole number from 1 to",
            id="table-range",
        ),
        pytest.param(
            '[backend.weights]\n"c5.large" = 0\n',
            "backend 'api'.weights.'c5.large': 0 is out of range",
            id="table-zero",
        ),
        pytest.param(
            '[backend.weights]\n"c5.large" = "big"\n',
            "backend 'api'.weights.'c5.large': 'big' is out of range",
            id="table-type",
        ),
        pytest.param(
            "weights = 5\n",
            "backend 'api'.weights: must be a table of instance types",
            id="table-not-a-table",
        ),
        pytest.param(
            "[backend.weights]\n",
            "backend 'api'.weights: must be a table of instance types",
            id="table-empty",
        ),
        pytest.param(
            "default_weight = 300\n",
            "backend 'api'.default_weight: 300 is out of range; use a whole number from 1 to 256",
            id="default-range",
        ),
        pytest.param(
            "default_weight = 3\n",
            "backend 'api'.default_weight: only used with weight = \"capacity\" or [backend.",
            id="default-alone",
        ),
        pytest.param(
            "zone_threshold = 0\n",
            "backend 'api'.zone_threshold: 0.0 is out of range; use a number from 0 to 1, above 0",
            id="threshold-zero",
        ),
        pytest.param(
            "zone_threshold = 1.5\n",
            "backend 'api'.zone_threshold: 1.5 is out of range",
            id="threshold-above-1",
        ),
    ],
)
def test_each_weight_and_zone_mistake_is_named(tmp_path: Path, added: str, expected: str) -> None:
    """Each mistake of the new keys is refused with what to do."""
    found = problems_of(tmp_path, VALID + added)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            VALID.replace("check inter 3s", "check weight 5") + 'weight = "capacity"\n',
            "backend 'api'.server_options: remove 'weight' (the backend's weights set each",
            id="weight-option",
        ),
        pytest.param(
            ROUTED.replace("check inter 3s", "check backup") + "zone_routing = true\n",
            "backend 'api'.server_options: remove 'backup' (zone routing decides which",
            id="backup-option",
        ),
        pytest.param(
            VALID + "zone_routing = true\n",
            "backend 'api'.zone_routing: needs [haproxy] zone (the node's Availability Zone, or",
            id="routing-without-zone",
        ),
        pytest.param(
            ROUTED.replace('socket = "/run/haproxy/admin.sock"\n', "") + "zone_routing = true\n",
            "backend 'api'.zone_routing: needs [haproxy] socket",
            id="routing-without-socket",
        ),
        pytest.param(
            ROUTED.replace("eu-west-1a", "EU West 1a"),
            "haproxy.zone: 'EU West 1a' is not an Availability Zone name; use \"auto\"",
            id="zone-name",
        ),
    ],
)
def test_each_weight_and_zone_conflict_is_named(tmp_path: Path, text: str, expected: str) -> None:
    """Settings that contradict each other are refused with what to change."""
    found = problems_of(tmp_path, text)
    assert any(p.startswith(expected) for p in found), found


def test_a_bad_zone_override_names_its_variable(tmp_path: Path) -> None:
    """RECONCILER_HAPROXY_ZONE with a value that is no zone is named."""
    found = problems_of(tmp_path, ROUTED, {"RECONCILER_HAPROXY_ZONE": "eu west"})
    assert any(p.startswith("haproxy.zone (from RECONCILER_HAPROXY_ZONE)") for p in found), found
