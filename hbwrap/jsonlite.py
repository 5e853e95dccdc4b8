"""JSON for the keeper without the json package: json imports re and enum, 1.2 MB of a 5 MB keeper.

The parsing and the string escaping are json's own C accelerator (`_json`), driven the way json.decoder
and json.encoder drive it, so what comes out is what json.loads and json.dumps(sort_keys=True) give for
the documents hbwrap writes (tests/test_jsonlite.py compares them). Where `_json` is missing (not
CPython), the json package does the work.
"""
from __future__ import annotations

try:
    import _json
except ImportError:  # pragma: no cover - not CPython
    _json = None

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Context:
    """What _json.make_scanner reads off a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


_scan = _json.make_scanner(_Context()) if _json is not None else None


def loads(text: str | bytes) -> object:
    """json.loads: ValueError (json.JSONDecodeError, or ValueError for truncated input) when it is not JSON."""
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    start = 0
    while start < len(text) and text[start] in _WHITESPACE:
        start += 1
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"not JSON: expected a value at character {exc.value}") from None
    while end < len(text) and text[end] in _WHITESPACE:
        end += 1
    if end != len(text):
        raise ValueError(f"not JSON: extra data at character {end}")
    return value


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _encode(value: object, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_json.encode_basestring_ascii(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(", ")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            if i:
                out.append(", ")
            out.append(_json.encode_basestring_ascii(key))
            out.append(": ")
            _encode(value[key], out)
        out.append("}")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: object) -> str:
    """json.dumps(value, sort_keys=True) for str keys and None, bool, int, float, str, list, tuple, dict values."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(value, sort_keys=True)
    out: list[str] = []
    _encode(value, out)
    return "".join(out)
