"""Where the config file is, and merging it with the flags and the environment into `hbwrap run`'s options.

Loading and checking the file (tomllib, line numbers, suggestions) is configfile.py's, imported only
when there is a file: a run without one pays for none of it.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

from hbwrap.config_keys import DEFAULTS, RUN_KEYS, norm_key as _norm
from hbwrap.errors import ConfigError, HbwrapError, UsageError

TYPE_CHECKING = False  # typing's own flag without importing typing (ruff and mypy honour it)
if TYPE_CHECKING:
    from typing import Any

    from hbwrap.configfile import Config

# The parameters of options.build_run_options that a setting feeds (all but command and name).
BUILD_PARAMS = frozenset(key.replace("-", "_") for key in RUN_KEYS) - {"command", "if_running"}

# --------------------------------------------------------------------------------------------- discovery

def default_config_path(env: Mapping[str, str] | None = None) -> str:
    """Where the config file is looked for (and where `config init` writes): $HBWRAP_CONFIG, else XDG."""
    env = os.environ if env is None else env
    if env.get("HBWRAP_CONFIG"):
        return os.path.expanduser(env["HBWRAP_CONFIG"])
    return _xdg_config_path(env)


def _xdg_config_path(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):  # the XDG spec says relative values are to be ignored
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    return os.path.join(base, "hbwrap", "config.toml")


def find_config(explicit: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> str | None:
    """The config file: --config FILE (must exist), else $HBWRAP_CONFIG (must exist), else the XDG file if any."""
    env = os.environ if env is None else env
    if explicit is not None and str(explicit) != "":
        path = os.path.expanduser(os.fspath(explicit))
        if not os.path.exists(path):
            raise ConfigError(f"{explicit}: config file not found (--config)")
        return path
    if env.get("HBWRAP_CONFIG"):
        path = os.path.expanduser(env["HBWRAP_CONFIG"])
        if not os.path.exists(path):
            raise ConfigError(f"{env['HBWRAP_CONFIG']}: config file not found ($HBWRAP_CONFIG)")
        return path
    path = _xdg_config_path(env)
    return path if os.path.exists(path) else None


def resolve_config(explicit: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> "Config | None":
    """find_config + load_config: the loaded config, or None when there is none."""
    path = find_config(explicit, env)
    if path is None:
        return None
    from hbwrap.configfile import load_config

    return load_config(path)


# --------------------------------------------------------------------------------------------- merging

def effective_settings(config: Config | None, job: str | None, flags: Mapping[str, Any],
                       env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge flags > [jobs.JOB] > [defaults] > built-in defaults.

    `flags` holds the options given on the command line (keys with dashes or underscores; None, or an
    empty list for a repeatable option, means "not given"; `name` and `config` are ignored). Returns every
    key of RUN_KEYS with its raw value (None = not set) and where it came from: "flag",
    "FILE:[jobs.JOB]", "FILE:[defaults]" or "default". A flag list replaces a config list.
    With `env`, a non-empty $HBWRAP_STATE_DIR sits between the flag and the file for state-dir
    (origin "$HBWRAP_STATE_DIR"), as environment variables usually do.
    """
    settings = dict(DEFAULTS)
    origins = {key: "default" for key in DEFAULTS}
    if config is not None:
        layers = [(config.defaults, f"{config.path}:[defaults]")]
        if job is not None and job in config.jobs:
            layers.append((config.jobs[job], f"{config.path}:[jobs.{job}]"))
        for table, origin in layers:
            for key, value in table.items():
                settings[key] = value
                origins[key] = origin
    if env is not None and env.get("HBWRAP_STATE_DIR"):
        settings["state-dir"] = env["HBWRAP_STATE_DIR"]
        origins["state-dir"] = "$HBWRAP_STATE_DIR"
    for raw_key, value in flags.items():
        key = _norm(raw_key)
        if key in ("name", "config"):
            continue
        if key not in RUN_KEYS:
            raise ValueError(f"effective_settings: unknown option {raw_key!r}")
        if value is None or (isinstance(value, (list, tuple)) and not value):  # not given
            continue
        settings[key] = list(value) if isinstance(value, tuple) else value
        origins[key] = "flag"
    return settings, origins


def usage_error_origin(exc: UsageError, config: Config | None, job: str | None,
                       origins: Mapping[str, str]) -> HbwrapError:
    """Re-attribute a UsageError `--opt: ...` raised while building options from merged settings.

    When the offending value came from the config file, the error is a ConfigError (exit 125) that names
    the file, the line and the key; otherwise the UsageError itself is returned.
    """
    message = str(exc)
    m = re.match(r"--([a-z-]+): ", message)
    if config is None or not m:
        return exc
    key = m.group(1)
    origin = origins.get(key, "")
    for table in ((f"jobs.{job}",) if job is not None else ()) + ("defaults",):
        if origin == f"{config.path}:[{table}]":
            return config.error(table, key, message[m.end():])
    return exc


def run_settings(given: Mapping[str, Any], name: str | None, config_arg: str | None,
                 env: Mapping[str, str] | None = None, need_command: bool = True):
    """Options for `hbwrap run`/`config show`: flags merged over the config file, validated.

    Returns (RunOptions, settings, origins, config). Without `need_command` (config show), a missing
    command is allowed. An invalid value from the file is a ConfigError naming
    file, line and key (exit 125); an invalid flag stays a UsageError (exit 2).
    """
    from hbwrap.options import build_run_options

    env = os.environ if env is None else env
    config = resolve_config(config_arg, env)
    settings, origins = effective_settings(config, name, given, env=env)
    # secrets kept out of crontab lines: the environment beats the file, a flag beats both
    if env.get("HBWRAP_ALERT_WEBHOOK") and origins["alert-webhook"] != "flag":
        settings["alert-webhook"] = env["HBWRAP_ALERT_WEBHOOK"].split()
        origins["alert-webhook"] = "$HBWRAP_ALERT_WEBHOOK"
    if env.get("HBWRAP_PING_URL") and origins["ping-url"] != "flag":
        settings["ping-url"] = env["HBWRAP_PING_URL"].strip()
        origins["ping-url"] = "$HBWRAP_PING_URL"
    if env.get("HBWRAP_LEASE_URL") and origins["lease-url"] != "flag":
        settings["lease-url"] = env["HBWRAP_LEASE_URL"].strip()
        origins["lease-url"] = "$HBWRAP_LEASE_URL"
    kwargs = {key.replace("-", "_"): value for key, value in settings.items()
              if key.replace("-", "_") in BUILD_PARAMS and origins[key] != "default"}
    kwargs["command"] = settings.get("command") or ([] if need_command else ["<command>"])
    if not kwargs["command"] and name is not None and config is not None and name not in config.jobs:
        raise UsageError(f"missing command: job {name!r} is not declared in {config.path}; "
                         f"use hbwrap run [OPTIONS] -- COMMAND [ARG...]")
    try:
        opts = build_run_options(name=name, **kwargs)
    except UsageError as exc:
        raise usage_error_origin(exc, config, name, origins) from None
    return opts, settings, origins, config

