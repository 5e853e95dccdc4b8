"""The TOML configuration file: discovery, validation with file:line errors, merging with flags, writing."""
from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from hbwrap.errors import ConfigError, HbwrapError, UsageError
from hbwrap.model import EVENT_NAMES
from hbwrap.options import (DEFAULT_PROGRESS_PATTERN, DEFAULT_RETRY_AFTER_PATTERN, check_name, compile_pattern, parse_count, parse_duration,
                            parse_exit_codes, parse_if_running, parse_restart, parse_signal, parse_size)

CONFIG_MODE = 0o600
CONFIG_DIR_MODE = 0o700

# Every long option of `hbwrap run` that a config table may hold (dashes form) -> the kind of its value.
# Kinds: duration, size, count, signal, string, path, regex-list, string-list, bool, choice:A|B|C,
# exit-codes, event-list (a comma list or an array of event names, or "all"), command (array of strings).
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
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


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


# --------------------------------------------------------------------------------------------- line finder

def _parse_dotted_key(s: str, i: int) -> tuple[tuple[str, ...], int] | None:
    """A TOML dotted key starting at s[i] (after whitespace): its parts and the index after it, or None."""
    parts: list[str] = []
    n = len(s)
    while True:
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            return None
        if s[i] == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            if j >= n:
                return None
            try:
                parts.append(tomllib.loads(f"k = {s[i:j + 1]}")["k"])
            except tomllib.TOMLDecodeError:
                return None
            i = j + 1
        elif s[i] == "'":
            j = s.find("'", i + 1)
            if j < 0:
                return None
            parts.append(s[i + 1:j])
            i = j + 1
        else:
            m = _BARE_KEY.match(s, i)
            if not m:
                return None
            parts.append(m.group())
            i = m.end()
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == ".":
            i += 1
            continue
        return tuple(parts), i


@dataclass
class _ValueScan:
    """Where a multi-line value stands at the end of a line: open brackets and an open multi-line string."""

    depth: int = 0
    ml_delim: str | None = None

    @property
    def open(self) -> bool:
        return self.depth > 0 or self.ml_delim is not None


def _scan_value(s: str, i: int, st: _ValueScan) -> _ValueScan:
    n = len(s)
    while i < n:
        if st.ml_delim is not None:
            j = i
            while j < n:
                if st.ml_delim == '"""' and s[j] == "\\":
                    j += 2
                    continue
                if s.startswith(st.ml_delim, j):
                    break
                j += 1
            if j >= n:
                return st
            i = j + 3
            while i < n and s[i] == st.ml_delim[0]:  # up to two quotes may end the string's content
                i += 1
            st.ml_delim = None
            continue
        c = s[i]
        if c == "#":
            return st
        if s.startswith('"""', i) or s.startswith("'''", i):
            st.ml_delim = s[i:i + 3]
            i += 3
        elif c == '"':
            i += 1
            while i < n and s[i] != '"':
                i += 2 if s[i] == "\\" else 1
            i += 1
        elif c == "'":
            j = s.find("'", i + 1)
            i = n if j < 0 else j + 1
        elif c in "[{":
            st.depth += 1
            i += 1
        elif c in "]}":
            st.depth = max(0, st.depth - 1)
            i += 1
        else:
            i += 1
    return st


def _scan_locations(text: str) -> tuple[dict[tuple[str, ...], int], dict[tuple[str, ...], int], list]:
    """Line numbers of keys (full dotted paths) and table headers, and repeated keys (for duplicate errors).

    tomllib reports no positions for keys, so the text is scanned line by line, skipping the inside of
    multi-line strings and arrays.
    """
    keys: dict[tuple[str, ...], int] = {}
    tables: dict[tuple[str, ...], int] = {}
    repeats: list[tuple[tuple[str, ...], int]] = []
    table: tuple[str, ...] = ()
    cont = _ValueScan()
    for lineno, line in enumerate(text.split("\n"), 1):
        if cont.open:
            cont = _scan_value(line, 0, cont)
            continue
        s = line.lstrip(" \t")
        offset = len(line) - len(s)
        if s.startswith("["):
            array = s.startswith("[[")
            parsed = _parse_dotted_key(line, offset + (2 if array else 1))
            if parsed:
                parts, end = parsed
                rest = line[end:].lstrip(" \t")
                if rest.startswith("]]" if array else "]"):
                    table = parts
                    tables.setdefault(parts, lineno)
            continue
        parsed = _parse_dotted_key(line, offset)
        if not parsed:
            continue
        parts, end = parsed
        if end < len(line) and line[end] == "=":
            path = table + parts
            if path in keys:
                repeats.append((path, lineno))
            else:
                keys[path] = lineno
            cont = _scan_value(line, end + 1, _ValueScan())
    return keys, tables, repeats


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


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__  # datetime, date, time


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return str(value)


def _got(value: Any) -> str:
    shown = _show(value)
    kind = _toml_type(value)
    return kind if shown == kind else f"{kind} {shown}"


class _Problem(Exception):
    """A problem with one value; becomes a ConfigError once the file, table and line are known."""


def _usage(fn, *args):
    try:
        return fn(*args)
    except UsageError as exc:
        raise _Problem(_strip_option(str(exc), args[-1])) from None


def _strip_option(message: str, option: str) -> str:
    prefix = f"{option}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _str_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list):
        bad = next(v for v in value if not isinstance(v, str))
        raise _Problem(f"expected {what}, got an array holding {_got(bad)}")
    raise _Problem(f"expected {what}, got {_got(value)}")


def _check_value(key: str, value: Any, base_dir: Path) -> Any:
    """Validate one value of kind RUN_KEYS[key]; return it in the shape the command line passes it."""
    kind = RUN_KEYS[key]
    if kind == "duration":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Problem(f'expected a duration like "90s", "15m", "1h30m" or a number of seconds, got {_got(value)}')
        seconds = _usage(parse_duration, value, key)
        if key in ("probe-interval", "lease") and seconds <= 0:
            raise _Problem("must be greater than 0")
        return value
    if kind == "size":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _Problem(f'expected a size like "50MB" or a number of bytes, got {_got(value)}')
        _usage(parse_size, value, key)
        return value
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Problem(f"expected a whole number, got {_got(value)}")
        _usage(parse_count, value, key)
        if key == "probe-failures" and value < 1:
            raise _Problem("must be at least 1")
        return value
    if kind == "signal":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _Problem(f'expected a signal name like "TERM" or a number, got {_got(value)}')
        _usage(parse_signal, value, key)
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise _Problem(f"expected a string, got {_got(value)}")
        if not value.strip():
            raise _Problem("must not be empty")
        return value
    if kind == "path":
        if not isinstance(value, str):
            raise _Problem(f"expected a path (string), got {_got(value)}")
        if not value.strip():
            raise _Problem("must not be empty")
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else base_dir / path)  # relative to the config file
    if kind == "regex-list":
        patterns = _str_list(value, "a regular expression (string) or an array of them")
        for p in patterns:
            _usage(compile_pattern, p, key)
        return patterns
    if kind == "string-list":
        items = _str_list(value, "a string or an array of strings")
        if any(not v.strip() for v in items):
            raise _Problem("must not hold an empty string")
        return items
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Problem(f"expected true or false, got {_got(value)}")
        return value
    if kind.startswith("choice:"):
        choices = kind[len("choice:"):].split("|")
        if not isinstance(value, str):
            raise _Problem(f"expected one of {', '.join(choices)} (a string), got {_got(value)}")
        if key == "restart":
            return _usage(parse_restart, value, key).value
        if key == "if-running":
            return _usage(parse_if_running, value, key)
        if value.strip().lower() not in choices:
            raise _Problem(f"unknown value {value!r} (use {', '.join(choices[:-1])} or {choices[-1]})")
        return value.strip().lower()
    if kind == "exit-codes":
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, str):
            items: list = value.split(",")
        elif isinstance(value, list) and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
            items = value
        else:
            raise _Problem(f'expected exit codes like "1,2,75" or [1, 2, 75], got {_got(value)}')
        codes = _usage(parse_exit_codes, [str(v) for v in items], key)
        return ",".join(str(c) for c in codes)
    if kind == "event-list":
        if isinstance(value, str):
            items = value.split(",")
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = list(value)
        else:
            raise _Problem(f'expected a list of events like "stall,escalate" or ["stall"], got {_got(value)}')
        names = [v.strip().lower() for v in items]
        known = (*EVENT_NAMES, "all")
        for name in names:
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                tail = f" (did you mean {hint[0]}?)" if hint else f" (use all or some of {', '.join(EVENT_NAMES)})"
                raise _Problem(f"unknown event {name!r}{tail}")
        if not names:
            raise _Problem("must name at least one event")
        return ",".join(names)
    if kind == "activity-list":
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            from hbwrap.activity import parse_activity

            return ",".join(_usage(parse_activity, value, key)) or "none"
        raise _Problem(f'expected "cpu", "io", "cpu,io" or an array of them, got {_got(value)}')
    if kind == "command":
        if not isinstance(value, list) or not value:
            raise _Problem(f'expected a non-empty array of strings like ["./job.sh", "--flag"], got {_got(value)}')
        if not all(isinstance(v, str) for v in value):
            bad = next(v for v in value if not isinstance(v, str))
            raise _Problem(f"expected an array of strings, got an array holding {_got(bad)}")
        if not value[0]:
            raise _Problem("the program (first element) must not be empty")
        return list(value)
    raise AssertionError(f"unknown kind {kind!r} of {key}")  # pragma: no cover


def _suggest(word: str, candidates) -> str | None:
    norm = {_norm(c): c for c in candidates}
    hits = difflib.get_close_matches(_norm(word), list(norm), n=1, cutoff=0.6)
    if not hits:
        return None
    hit = hits[0]
    return hit.replace("-", "_") if "_" in word and "-" not in word else hit


def load_config(path: Path | str) -> Config:
    """Read and validate a config file; every problem is a one-line ConfigError naming file, line and key."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{path}: cannot read config file: is a directory") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: invalid TOML: not valid UTF-8") from None
    keys, tables, repeats = _scan_locations(text)
    try:
        raw = tomllib.loads(text)
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

    config = Config(path=path, _keys=keys, _tables=tables)
    base_dir = path.expanduser().absolute().parent

    def fail(tpath: tuple[str, ...] | None, key: str | None, problem: str, lpath: tuple[str, ...]) -> ConfigError:
        return ConfigError(_format(path, config._line_of_path(lpath), tpath, key, problem))

    def check_table(tpath: tuple[str, ...], table: dict) -> dict[str, Any]:
        out: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        in_defaults = tpath == ("defaults",)
        for raw_key, value in table.items():
            key = _norm(raw_key)
            lpath = tpath + (raw_key,)
            if key in spelled:
                other = config._line_of_path(tpath + (spelled[key],))
                at = f" on line {other}" if other else ""
                raise fail(tpath, raw_key, f"set twice (also as {spelled[key]}{at})", lpath)
            if key in NOT_IN_FILE:
                raise fail(tpath, raw_key, NOT_IN_FILE[key], lpath)
            if key not in RUN_KEYS:
                hint = _suggest(raw_key, RUN_KEYS)
                tail = f" (did you mean {hint}?)" if hint else ""
                raise fail(tpath, raw_key, f"unknown key{tail}", lpath)
            if in_defaults and key in ONLY_IN_JOBS:
                raise fail(tpath, raw_key, "only allowed in a [jobs.NAME] table", lpath)
            if not in_defaults and key in ONLY_IN_DEFAULTS:
                raise fail(tpath, raw_key, "only allowed in [defaults] (status, watch and stop must find "
                                           "every job's state)", lpath)
            try:
                out[key] = _check_value(key, value, base_dir)
            except _Problem as exc:
                raise fail(tpath, raw_key, str(exc), lpath) from None
            spelled[key] = raw_key
        return out

    for top, value in raw.items():
        if top == "defaults":
            if not isinstance(value, dict):
                raise fail(None, top, f"expected a table [defaults], got {_got(value)}", (top,))
            config.defaults = check_table(("defaults",), value)
        elif top == "jobs":
            if not isinstance(value, dict):
                raise fail(None, top, f"expected tables [jobs.NAME], got {_got(value)}", (top,))
            for name, table in value.items():
                tpath = ("jobs", name)
                try:
                    check_name(name, "name")
                except UsageError as exc:
                    raise fail(tpath, None, _strip_option(str(exc), "name"), tpath) from None
                if not isinstance(table, dict):
                    raise fail(("jobs",), name, f"expected a table [jobs.{name}], got {_got(value[name])}", tpath)
                config.jobs[name] = check_table(tpath, table)
        elif isinstance(value, dict):
            hint = _suggest(top, ("defaults", "jobs"))
            tail = f" (did you mean [{hint}]?)" if hint else " (expected [defaults] or [jobs.NAME])"
            raise fail((top,), None, f"unknown table{tail}", (top,))
        else:
            where = "[defaults] or a [jobs.NAME] table" if _norm(top) in RUN_KEYS else "[defaults] or [jobs.NAME]"
            raise fail(None, top, f"keys must be inside {where}", (top,))
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


# --------------------------------------------------------------------------------------------- writing

def _toml_ready(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "value") and isinstance(getattr(value, "value"), (str, int)):  # enums
        return value.value
    return value


def _origin_comment(origin: str) -> str:
    return f"  # from {origin}".replace("\n", " ")


def to_toml(settings: Mapping[str, Any], origins: Mapping[str, str] | None = None, job: str | None = None) -> str:
    """The settings as TOML under [jobs.JOB] (or [defaults] without a job); with origins, `# from ...` comments.

    Unset values (None) appear as comments, since TOML has no null. The result loads with tomllib.
    """
    lines = ["# effective settings: flags > [jobs.NAME] > [defaults] > built-in defaults"]
    ordered = [k for k in RUN_KEYS if k in settings] + [k for k in settings if k not in RUN_KEYS]
    tables: list[tuple[dict, list[str]]] = []
    if job is not None and settings.get("state-dir") is not None:
        # state-dir is only allowed in [defaults], so that the output can be pasted into a config file
        tables.append(({"defaults": {"x": 0}}, ["state-dir"]))
        ordered.remove("state-dir")
    tables.append(({"jobs": {job: {"x": 0}}} if job is not None else {"defaults": {"x": 0}}, ordered))
    for header_doc, keys in tables:
        lines.append(tomli_w.dumps(header_doc).split("\n", 1)[0])
        for key in keys:
            value = settings[key]
            if value is None:
                lines.append(f"# {key}: not set ({UNSET_MEANS.get(key, 'none')})")
                continue
            chunk = tomli_w.dumps({key: _toml_ready(value)}).rstrip("\n").split("\n")
            origin = origins.get(key) if origins is not None else None
            if origin:
                chunk[-1] += _origin_comment(origin)  # a comment may follow a value or an array's closing bracket
            lines.extend(chunk)
    return "\n".join(lines) + "\n"


STARTER_CONFIG = '''\
# hbwrap configuration file (TOML).
#
# [defaults] applies to every job; [jobs.NAME] tables override it for one job; flags on the
# command line override both. Keys are the long options of `hbwrap run`, with dashes or
# underscores (response-timeout = response_timeout). A job table may hold `command`, so that
#
#     hbwrap run --name NAME
#
# starts it. `hbwrap config show --name NAME --origin` prints what a job will really get.
# Durations: 90, 1.5, 250ms, 90s, 15m, 2h, 1d, 1h30m.  Sizes: 10MB, 1GB, 500KiB.
# Relative paths (checkpoint-file, heartbeat-file, state-dir) are relative to this file;
# `command` runs in the directory hbwrap is started from (use absolute paths from cron).

[defaults]
kill-signal = "TERM"        # first signal to the job's process group when stopping it
grace = "10s"               # then SIGKILL whatever is left
restart = "on-stall"        # never | on-stall | on-failure
max-restarts = 3
backoff = "1s"              # before restart k: backoff * 2^(k-1), jittered, capped by backoff-max
backoff-max = "5m"
if-running = "skip"         # a cron overlap exits 0 at once (fail: exit 75; wait: run afterwards)
log-max-size = "50MB"
# alert-cmd = 'notify-send "hbwrap: $HBWRAP_JOB $HBWRAP_EVENT ($HBWRAP_REASON)"'
# alert-webhook = ["https://hooks.slack.com/services/T000/B000/XXXX"]
# webhook-format = "slack"  # json | slack | discord
# alert-on = ["stall", "escalate", "takeover", "restart_pending"]   # or "all"

# Browser automation: a script drives a headless browser to post at 03:00 sharp.
# Browsers hang on a loading screen or a dialog while the process stays alive, so
# ask the browser itself: the probe fails when its DevTools endpoint stops answering.
# --pty makes programs that buffer their output when not on a terminal stream it.
[jobs.browser-post]
command = ["python3", "/home/me/bots/post_comment.py", "--headless"]
timeout = "15m"             # one attempt may not take longer than this
deadline = "40m"            # the whole run, restarts included: the posting window
response-timeout = "2m"     # no output, heartbeat or passing probe for 2 minutes = stalled
probe = "curl -sf --max-time 5 http://127.0.0.1:9222/json/version >/dev/null"
probe-interval = "30s"
probe-timeout = "10s"
probe-failures = 3          # three failed probes in a row = stalled
pty = true
max-restarts = 2
fatal-pattern = ["account suspended", "(?i)captcha required"]   # do not retry these

# API calls: a client that talks to a rate-limited HTTP API. A request that never
# returns is caught by --timeout; transient failures (exit 75 = EX_TEMPFAIL) are
# retried with back-off, anything else is reported at once.
[jobs.api-sync]
command = ["/usr/local/bin/sync-orders", "--since", "yesterday"]
timeout = "10m"
response-timeout = "3m"
restart = "on-failure"      # restart after non-zero exits too, not only after stalls
retry-exit-codes = [1, 75]  # only these exit codes are retried
max-restarts = 5
backoff = "30s"
backoff-max = "10m"
quiet = true                # cron mode: output only when the run fails

# Long local computation: a research job that runs for hours and may print
# nothing for long stretches. It reports progress by printing `checkpoint: <value>`
# (or by running `hbwrap checkpoint VALUE`); when it makes no progress for 20
# minutes it is restarted and finds the last checkpoint in $HBWRAP_RESUME_FROM.
[jobs.research]
command = ["python3", "/home/me/research/research.py", "--urls", "/home/me/research/urls.txt"]
progress-timeout = "20m"
start-grace = "2m"          # loading models/data does not count against the clocks
progress-pattern = ['^\\s*checkpoint[:=]\\s*(\\S.*?)\\s*$', '^processed url (\\d+)/\\d+']
resume = true               # pass the last checkpoint to the next attempt
restart = "on-failure"
max-restarts = 10
deadline = "8h"
'''


def write_starter(path: Path | str, force: bool = False) -> None:
    """`hbwrap config init`: write STARTER_CONFIG to `path` (mode 0600); never replace a file without force."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory")
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists (use --force to overwrite it)")
    try:
        from hbwrap.jobstore import make_dirs, write_atomic

        make_dirs(path.parent, CONFIG_DIR_MODE)
        if not force:  # O_EXCL: a file that appeared meanwhile is never overwritten
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, CONFIG_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(STARTER_CONFIG)
            return
        write_atomic(path, STARTER_CONFIG.encode("utf-8"), mode=CONFIG_MODE)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists (use --force to overwrite it)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write config file: {exc.strerror or exc}") from None


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
