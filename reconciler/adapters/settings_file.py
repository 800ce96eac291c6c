"""
Where the settings come from: the TOML file ``--config`` or ``RECONCILER_CONFIG`` names, and the
process environment; ``reconciler.core.settings.parse`` validates what they hold.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from reconciler.core.errors import ConfigError
from reconciler.core.settings import CONFIG_ENV, DEFAULT_CONFIG_PATH, Settings, parse


def config_path(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """The settings file: ``--config``, else ``RECONCILER_CONFIG``, else ``./reconciler.toml``."""
    return Path(explicit or environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the file, apply overrides from *environ* and validate; raise ``ConfigError``."""
    env = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"no such file; write one (see README) or point --config / {CONFIG_ENV} at it"
        raise ConfigError([msg], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read: {exc}"], str(path)) from None
    except ValueError as exc:  # TOMLDecodeError, or an integer of more digits than Python reads
        raise ConfigError([f"not valid TOML: {exc}"], str(path)) from None
    return parse(raw, env, source=str(path))
