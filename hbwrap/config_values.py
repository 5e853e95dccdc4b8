"""The checks of one config-file value by its kind (duration, size, signal, ...), one small function per kind."""
from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hbwrap.errors import UsageError
from hbwrap.model import EVENT_NAMES
from hbwrap.options import (compile_pattern, parse_count, parse_duration, parse_exit_codes, parse_if_running,
                            parse_restart, parse_signal, parse_size)


class ValueProblem(Exception):
    """A problem with one value; becomes a ConfigError once the file, table and line are known."""


def toml_type(value: Any) -> str:
    """The TOML name of a loaded value's type: string, integer, array, table, ..."""
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


def got(value: Any) -> str:
    """What a wrong value was, for `expected ..., got ...`: its type, and the value when it is short."""
    shown = _show(value)
    kind = toml_type(value)
    return kind if shown == kind else f"{kind} {shown}"


def strip_option(message: str, option: str) -> str:
    """A parser's `option: problem` message without the option (the config error names the key itself)."""
    prefix = f"{option}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _parsed(fn, value: Any, key: str):
    """fn(value, key) from hbwrap.options, its UsageError turned into a ValueProblem."""
    try:
        return fn(value, key)
    except UsageError as exc:
        raise ValueProblem(strip_option(str(exc), key)) from None


def _str_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list):
        bad = next(v for v in value if not isinstance(v, str))
        raise ValueProblem(f"expected {what}, got an array holding {got(bad)}")
    raise ValueProblem(f"expected {what}, got {got(value)}")


def _duration(key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueProblem(f'expected a duration like "90s", "15m", "1h30m" or a number of seconds, got {got(value)}')
    seconds = _parsed(parse_duration, value, key)
    if key in ("probe-interval", "lease") and seconds <= 0:
        raise ValueProblem("must be greater than 0")
    return value


def _size(key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueProblem(f'expected a size like "50MB" or a number of bytes, got {got(value)}')
    _parsed(parse_size, value, key)
    return value


def _count(key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueProblem(f"expected a whole number, got {got(value)}")
    _parsed(parse_count, value, key)
    if key == "probe-failures" and value < 1:
        raise ValueProblem("must be at least 1")
    return value


def _signal(key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueProblem(f'expected a signal name like "TERM" or a number, got {got(value)}')
    _parsed(parse_signal, value, key)
    return value


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueProblem(f"expected a string, got {got(value)}")
    if not value.strip():
        raise ValueProblem("must not be empty")
    return value


def _path(key: str, value: Any, base_dir: Path) -> str:
    if not isinstance(value, str):
        raise ValueProblem(f"expected a path (string), got {got(value)}")
    if not value.strip():
        raise ValueProblem("must not be empty")
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base_dir / path)  # relative to the config file


def _regex_list(key: str, value: Any) -> list[str]:
    patterns = _str_list(value, "a regular expression (string) or an array of them")
    for p in patterns:
        _parsed(compile_pattern, p, key)
    return patterns


def _string_list(key: str, value: Any) -> list[str]:
    items = _str_list(value, "a string or an array of strings")
    if any(not v.strip() for v in items):
        raise ValueProblem("must not hold an empty string")
    return items


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueProblem(f"expected true or false, got {got(value)}")
    return value


def _choice(key: str, value: Any, choices: list[str]) -> str:
    if not isinstance(value, str):
        raise ValueProblem(f"expected one of {', '.join(choices)} (a string), got {got(value)}")
    if key == "restart":
        return _parsed(parse_restart, value, key).value
    if key == "if-running":
        return _parsed(parse_if_running, value, key)
    if value.strip().lower() not in choices:
        raise ValueProblem(f"unknown value {value!r} (use {', '.join(choices[:-1])} or {choices[-1]})")
    return value.strip().lower()


def _exit_codes(key: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        items: list = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
        items = value
    else:
        raise ValueProblem(f'expected exit codes like "1,2,75" or [1, 2, 75], got {got(value)}')
    codes = _parsed(parse_exit_codes, [str(v) for v in items], key)
    return ",".join(str(c) for c in codes)


def _event_list(key: str, value: Any) -> str:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise ValueProblem(f'expected a list of events like "stall,escalate" or ["stall"], got {got(value)}')
    names = [v.strip().lower() for v in items]
    known = (*EVENT_NAMES, "all")
    for name in names:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            tail = f" (did you mean {hint[0]}?)" if hint else f" (use all or some of {', '.join(EVENT_NAMES)})"
            raise ValueProblem(f"unknown event {name!r}{tail}")
    if not names:
        raise ValueProblem("must name at least one event")
    return ",".join(names)


def _activity_list(key: str, value: Any) -> str:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        from hbwrap.activity import parse_activity

        return ",".join(_parsed(parse_activity, value, key)) or "none"
    raise ValueProblem(f'expected "cpu", "io", "cpu,io" or an array of them, got {got(value)}')


def _command(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueProblem(f'expected a non-empty array of strings like ["./job.sh", "--flag"], got {got(value)}')
    if not all(isinstance(v, str) for v in value):
        bad = next(v for v in value if not isinstance(v, str))
        raise ValueProblem(f"expected an array of strings, got an array holding {got(bad)}")
    if not value[0]:
        raise ValueProblem("the program (first element) must not be empty")
    return list(value)


# kind -> check(key, value) -> the value in the shape the command line passes it. `path` and
# `choice:A|B|C` need more than the value and are dispatched in check_value.
CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "duration": _duration,
    "size": _size,
    "count": _count,
    "signal": _signal,
    "string": _string,
    "regex-list": _regex_list,
    "string-list": _string_list,
    "bool": _bool,
    "exit-codes": _exit_codes,
    "event-list": _event_list,
    "activity-list": _activity_list,
    "command": _command,
}


def check_value(key: str, kind: str, value: Any, base_dir: Path) -> Any:
    """Validate one value of `key`, whose kind is `kind` (configfile.RUN_KEYS); raises ValueProblem.

    Returns the value in the shape the command line passes it; a relative path becomes relative to
    `base_dir` (the config file's directory).
    """
    if kind == "path":
        return _path(key, value, base_dir)
    if kind.startswith("choice:"):
        return _choice(key, value, kind[len("choice:"):].split("|"))
    check = CHECKS.get(kind)
    if check is None:
        raise AssertionError(f"unknown kind {kind!r} of {key}")  # pragma: no cover
    return check(key, value)
