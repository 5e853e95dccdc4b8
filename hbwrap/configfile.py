"""The config file: loading and checking it, with FILE:LINE in every error.

  config_keys.py   the key table, the built-in defaults, where each key may stand (pure data)
  config_merge.py  finding the file, merging it with flags and environment (run_settings)
  configfile.py    Config and load_config: reading, parsing and checking the file
  config_lines.py  where keys stand in the TOML text, for FILE:LINE in errors
  config_values.py the check of one value per kind (duration, size, signal, ...)
  config_write.py  to_toml (config show) and the starter file (config init)
"""
from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hbwrap.config_lines import KeyPath, scan_locations
from hbwrap.config_values import ValueProblem, check_value, got, strip_option
from hbwrap.config_keys import NOT_IN_FILE, ONLY_IN_DEFAULTS, ONLY_IN_JOBS, RUN_KEYS
from hbwrap.config_keys import norm_key as _norm
from hbwrap.errors import ConfigError, UsageError
from hbwrap.options import check_name

# Re-exported: the tables and the merge were here before config_keys.py and config_merge.py.
from hbwrap.config_keys import DEFAULTS, UNSET_MEANS  # noqa: E402,F401
from hbwrap.config_merge import (default_config_path, effective_settings, find_config,  # noqa: E402,F401
                                 resolve_config, run_settings, usage_error_origin)

_TOML_ERROR_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_ERROR_END = re.compile(r"\s*\(at end of document\)\s*$")


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
