"""The config file's keys and defaults, finding and loading it with file:line errors, and merging it with flags.

  configfile.py    the key table and built-in defaults, discovery, Config, load_config, merging (run_settings)
  config_lines.py  where keys stand in the TOML text, for FILE:LINE in errors
  config_values.py the check of one value per kind (duration, size, signal, ...)
  config_write.py  to_toml (config show) and the starter file (config init)
"""
from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hbwrap.config_lines import KeyPath, scan_locations
from hbwrap.config_values import ValueProblem, check_value, got, strip_option
from hbwrap.errors import ConfigError, HbwrapError, UsageError
from hbwrap.options import DEFAULT_PROGRESS_PATTERN, DEFAULT_RETRY_AFTER_PATTERN, check_name

# Every long option of `hbwrap run` that a config table may hold (dashes form) -> the kind of its value.
# Kinds: duration, size, count, signal, string, path, regex-list, string-list, bool, choice:A|B|C,
# exit-codes, event-list (a comma list or an array of event names, or "all"), activity-list (cpu, io),
# command (array of strings). Their checks are in config_values.py.
RUN_KEYS: dict[str, str] = {
    "command": "command",
    "state-dir": "path",
    "timeout": "duration",
    "deadline": "duration",
    "response-timeout": "duration",
    "progress-timeout": "duration",
    "start-grace": "duration",
    "progress-pattern": "regex-list",
    "checkpoint-file": "path",
    "heartbeat-file": "path",
    "probe": "string",
    "probe-interval": "duration",
    "probe-timeout": "duration",
    "probe-failures": "count",
    "kill-signal": "signal",
    "grace": "duration",
    "restart": "choice:never|on-stall|on-failure",
    "max-restarts": "count",
    "backoff": "duration",
    "backoff-max": "duration",
    "retry-exit-codes": "exit-codes",
    "fatal-pattern": "regex-list",
    "resume": "bool",
    "alert-cmd": "string",
    "alert-webhook": "string-list",
    "webhook-format": "choice:json|slack|discord",
    "alert-on": "event-list",
    "ping-url": "string",
    "restart-check": "string",
    "restart-approval": "duration",
    "approval-default": "choice:restart|abort",
    "activity": "activity-list",
    "repeat-timeout": "duration",
    "dump-signal": "signal",
    "dump-wait": "duration",
    "retry-after-pattern": "regex-list",
    "lease-url": "string",
    "host": "string",
    "if-running": "choice:skip|fail|wait",
    "lease": "duration",
    "self-heal": "bool",
    "quiet": "bool",
    "verbose": "bool",
    "pty": "bool",
    "log-max-size": "size",
}

# Built-in defaults (SPEC §3) in the shape the command line passes them; None = not set.
DEFAULTS: dict[str, Any] = {
    "command": None,
    "state-dir": None,
    "timeout": None,
    "deadline": None,
    "response-timeout": None,
    "progress-timeout": None,
    "start-grace": "0s",
    "progress-pattern": [DEFAULT_PROGRESS_PATTERN],
    "checkpoint-file": None,
    "heartbeat-file": None,
    "probe": None,
    "probe-interval": "30s",
    "probe-timeout": "10s",
    "probe-failures": 3,
    "kill-signal": "TERM",
    "grace": "10s",
    "restart": "on-stall",
    "max-restarts": 3,
    "backoff": "1s",
    "backoff-max": "5m",
    "retry-exit-codes": None,
    "fatal-pattern": [],
    "resume": True,
    "alert-cmd": None,
    "alert-webhook": [],
    "webhook-format": "json",
    "alert-on": "stall,escalate,takeover,restart_pending",
    "ping-url": None,
    "restart-check": None,
    "restart-approval": None,
    "approval-default": "abort",
    "activity": None,
    "repeat-timeout": None,
    "dump-signal": None,
    "dump-wait": "2s",
    "retry-after-pattern": [DEFAULT_RETRY_AFTER_PATTERN],
    "lease-url": None,
    "host": None,
    "if-running": "skip",
    "lease": "30s",
    "self-heal": True,
    "quiet": False,
    "verbose": False,
    "pty": False,
    "log-max-size": "50MB",
}

# What "not set" means, for `config show`.
UNSET_MEANS: dict[str, str] = {
    "command": "the command after --",
    "state-dir": "$HBWRAP_STATE_DIR, else $XDG_STATE_HOME/hbwrap, else ~/.local/state/hbwrap",
    "timeout": "no limit",
    "deadline": "no limit",
    "response-timeout": "no limit",
    "progress-timeout": "no limit",
    "checkpoint-file": "<job dir>/checkpoint",
    "heartbeat-file": "<job dir>/heartbeat",
    "probe": "no probe",
    "retry-exit-codes": "any non-zero",
    "alert-cmd": "none",
    "ping-url": "none",
    "restart-check": "none: restarts need no check",
    "restart-approval": "none: restarts need no approval",
    "activity": "none: only output, heartbeats and markers are signs of life",
    "repeat-timeout": "no limit",
    "dump-signal": "none",
    "lease-url": "$HBWRAP_LEASE_URL, else none: the lease is in the state dir",
    "host": "this host's name",
}

ONLY_IN_DEFAULTS = frozenset({"state-dir"})  # status/watch/stop must find every job's state without a job table
ONLY_IN_JOBS = frozenset({"command"})
NOT_IN_FILE = {
    "name": "not allowed: a job's name is its table name, [jobs.NAME]",
    "config": "not allowed in a config file",
}

_TOML_ERROR_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_ERROR_END = re.compile(r"\s*\(at end of document\)\s*$")


def _norm(key: str) -> str:
    return key.replace("_", "-")


# --------------------------------------------------------------------------------------------- discovery

def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the config file is looked for (and where `config init` writes): $HBWRAP_CONFIG, else XDG."""
    env = os.environ if env is None else env
    if env.get("HBWRAP_CONFIG"):
        return Path(env["HBWRAP_CONFIG"]).expanduser()
    return _xdg_config_path(env)


def _xdg_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):  # the XDG spec says relative values are to be ignored
        home = env.get("HOME") or str(Path.home())
        base = os.path.join(home, ".config")
    return Path(base) / "hbwrap" / "config.toml"


def find_config(explicit: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file: --config FILE (must exist), else $HBWRAP_CONFIG (must exist), else the XDG file if any."""
    env = os.environ if env is None else env
    if explicit is not None and str(explicit) != "":
        path = Path(explicit).expanduser()
        if not path.exists():
            raise ConfigError(f"{explicit}: config file not found (--config)")
        return path
    if env.get("HBWRAP_CONFIG"):
        path = Path(env["HBWRAP_CONFIG"]).expanduser()
        if not path.exists():
            raise ConfigError(f"{env['HBWRAP_CONFIG']}: config file not found ($HBWRAP_CONFIG)")
        return path
    path = _xdg_config_path(env)
    return path if path.exists() else None


def resolve_config(explicit: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> "Config | None":
    """find_config + load_config: the loaded config, or None when there is none."""
    path = find_config(explicit, env)
    return load_config(path) if path is not None else None

# --------------------------------------------------------------------------------------------- the Config

def _table_path(table: str | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(table, tuple):
        return table
    if table.startswith("jobs."):
        return ("jobs", table[len("jobs."):])
    return (table,)


def _table_label(path: tuple[str, ...]) -> str:
    return "[" + ".".join(path) + "]"


@dataclass
class Config:
    """A loaded, validated config file. Values are in the shape the command line passes them, keys with dashes."""

    path: Path
    defaults: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _keys: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)
    _tables: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)

    def _line_of_path(self, path: tuple[str, ...]) -> int | None:
        if path in self._keys:
            return self._keys[path]
        while path:
            lines = [ln for p, ln in (*self._keys.items(), *self._tables.items()) if p[:len(path)] == path]
            if lines:
                return min(lines)
            path = path[:-1]
        return None

    def line_of(self, table: str | tuple[str, ...], key: str | None = None) -> int | None:
        """The line of `key` (either spelling) in `table` ("defaults", "jobs.NAME"), else of the table, else None."""
        tpath = _table_path(table)
        if key is not None:
            for p, ln in self._keys.items():
                if p[:-1] == tpath and _norm(p[-1]) == _norm(key):
                    return ln
        return self._line_of_path(tpath)

    def error(self, table: str | tuple[str, ...], key: str | None, problem: str) -> ConfigError:
        """A ConfigError `FILE:LINE: [TABLE] KEY: PROBLEM` for a value of this file."""
        return ConfigError(_format(self.path, self.line_of(table, key), _table_path(table), key, problem))


def _format(path: Path | str, line: int | None, table: tuple[str, ...] | None, key: str | None, problem: str) -> str:
    where = f"{path}:{line}:" if line else f"{path}:"
    label = f" {_table_label(table)}" if table else ""
    if key is not None:
        return f"{where}{label} {key}: {problem}"
    return f"{where}{label}: {problem}" if label else f"{where} {problem}"


# --------------------------------------------------------------------------------------------- loading

def _suggest(word: str, candidates) -> str | None:
    norm = {_norm(c): c for c in candidates}
    hits = difflib.get_close_matches(_norm(word), list(norm), n=1, cutoff=0.6)
    if not hits:
        return None
    hit = hits[0]
    return hit.replace("-", "_") if "_" in word and "-" not in word else hit


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{path}: cannot read config file: is a directory") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: invalid TOML: not valid UTF-8") from None


def _parse_toml(path: Path, text: str, repeats: list[tuple[KeyPath, int]]) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_ERROR_POS.search(message)
        if m:
            line: int | None = int(m.group(1))
            message = message[:m.start()] + f" (column {m.group(2)})"
        else:
            message = _TOML_ERROR_END.sub("", message)
            # tomllib reports a repeated key "at end of document"; the scanner knows where it is
            line = repeats[0][1] if repeats and "overwrite" in message else text.count("\n") + 1
        raise ConfigError(f"{path}:{line}: invalid TOML: {message}") from None


def _fail(config: Config, tpath: KeyPath | None, key: str | None, problem: str, lpath: KeyPath) -> ConfigError:
    """The error about `key` of table `tpath`, at the line of `lpath` (or of the nearest enclosing table)."""
    return ConfigError(_format(config.path, config._line_of_path(lpath), tpath, key, problem))


def _placement_problem(key: str, in_defaults: bool) -> str | None:
    """Why `key` (a known key, dashes form) may not stand in this table, or None."""
    if in_defaults and key in ONLY_IN_JOBS:
        return "only allowed in a [jobs.NAME] table"
    if not in_defaults and key in ONLY_IN_DEFAULTS:
        return "only allowed in [defaults] (status, watch and stop must find every job's state)"
    return None


def _check_table(config: Config, tpath: KeyPath, table: dict, base_dir: Path) -> dict[str, Any]:
    """The validated values of [defaults] or a [jobs.NAME] table, keys in the dashes form."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}  # dashes form -> the spelling used in the file
    for raw_key, value in table.items():
        key = _norm(raw_key)
        lpath = tpath + (raw_key,)
        if key in spelled:
            other = config._line_of_path(tpath + (spelled[key],))
            at = f" on line {other}" if other else ""
            raise _fail(config, tpath, raw_key, f"set twice (also as {spelled[key]}{at})", lpath)
        if key in NOT_IN_FILE:
            raise _fail(config, tpath, raw_key, NOT_IN_FILE[key], lpath)
        if key not in RUN_KEYS:
            hint = _suggest(raw_key, RUN_KEYS)
            tail = f" (did you mean {hint}?)" if hint else ""
            raise _fail(config, tpath, raw_key, f"unknown key{tail}", lpath)
        problem = _placement_problem(key, in_defaults=tpath == ("defaults",))
        if problem:
            raise _fail(config, tpath, raw_key, problem, lpath)
        try:
            out[key] = check_value(key, RUN_KEYS[key], value, base_dir)
        except ValueProblem as exc:
            raise _fail(config, tpath, raw_key, str(exc), lpath) from None
        spelled[key] = raw_key
    return out


def _check_jobs(config: Config, jobs: Any, base_dir: Path) -> dict[str, dict[str, Any]]:
    """The validated [jobs.NAME] tables, by job name."""
    if not isinstance(jobs, dict):
        raise _fail(config, None, "jobs", f"expected tables [jobs.NAME], got {got(jobs)}", ("jobs",))
    out: dict[str, dict[str, Any]] = {}
    for name, table in jobs.items():
        tpath = ("jobs", name)
        try:
            check_name(name, "name")
        except UsageError as exc:
            raise _fail(config, tpath, None, strip_option(str(exc), "name"), tpath) from None
        if not isinstance(table, dict):
            raise _fail(config, ("jobs",), name, f"expected a table [jobs.{name}], got {got(table)}", tpath)
        out[name] = _check_table(config, tpath, table, base_dir)
    return out


def load_config(path: Path | str) -> Config:
    """Read and validate a config file; every problem is a one-line ConfigError naming file, line and key."""
    path = Path(path)
    text = _read_text(path)
    keys, tables, repeats = scan_locations(text)
    raw = _parse_toml(path, text, repeats)
    config = Config(path=path, _keys=keys, _tables=tables)
    base_dir = path.expanduser().absolute().parent
    for top, value in raw.items():
        if top == "defaults":
            if not isinstance(value, dict):
                raise _fail(config, None, top, f"expected a table [defaults], got {got(value)}", (top,))
            config.defaults = _check_table(config, ("defaults",), value, base_dir)
        elif top == "jobs":
            config.jobs = _check_jobs(config, value, base_dir)
        elif isinstance(value, dict):
            hint = _suggest(top, ("defaults", "jobs"))
            tail = f" (did you mean [{hint}]?)" if hint else " (expected [defaults] or [jobs.NAME])"
            raise _fail(config, (top,), None, f"unknown table{tail}", (top,))
        else:
            where = "[defaults] or a [jobs.NAME] table" if _norm(top) in RUN_KEYS else "[defaults] or [jobs.NAME]"
            raise _fail(config, None, top, f"keys must be inside {where}", (top,))
    return config


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
    import inspect

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
    accepted = inspect.signature(build_run_options).parameters
    kwargs = {key.replace("-", "_"): value for key, value in settings.items()
              if key.replace("-", "_") in accepted and origins[key] != "default"}
    kwargs["command"] = settings.get("command") or ([] if need_command else ["<command>"])
    if not kwargs["command"] and name is not None and config is not None and name not in config.jobs:
        raise UsageError(f"missing command: job {name!r} is not declared in {config.path}; "
                         f"use hbwrap run [OPTIONS] -- COMMAND [ARG...]")
    try:
        opts = build_run_options(name=name, **kwargs)
    except UsageError as exc:
        raise usage_error_origin(exc, config, name, origins) from None
    return opts, settings, origins, config
