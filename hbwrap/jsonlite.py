"""JSON without the json package, for the keeper and the supervisor's records: json imports re and enum
(1.2 MB of a 5 MB keeper) and compiles its regular expressions (about 0.3 MB of a supervisor).

The parsing and the encoding are json's own C accelerator (`_json`), driven the way json.decoder and
json.encoder drive it, so what comes out is what json.loads and json.dumps give for the documents hbwrap
writes (tests/test_jsonlite.py compares them). Where `_json` is missing (not
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
    except SystemError:
        # _json raises its errors as json.decoder.JSONDecodeError, which it looks up in sys.modules only:
        # where the json package was never imported it returns NULL without an exception instead
        raise ValueError("not JSON") from None
    while end < len(text) and text[end] in _WHITESPACE:
        end += 1
    if end != len(text):
        raise ValueError(f"not JSON: extra data at character {end}")
    return value


def _not_serializable(value: object):
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoder(sort_keys: bool, default=_not_serializable):
    # json.encoder's own C encoder, made as json.dumps makes it (default separators, ensure_ascii, allow_nan;
    # no circular check: hbwrap's documents are trees)
    return _json.make_encoder(None, default, _json.encode_basestring_ascii, None, ": ", ", ",
                              sort_keys, False, True)


_ENCODERS = {True: _encoder(True), False: _encoder(False)} if _json is not None else None


def dumps(value: object, sort_keys: bool = True, default=None) -> str:
    """json.dumps(value, sort_keys=sort_keys, default=default) for None, bool, int, float, str, list, tuple and
    dict values (keys as json takes them); anything else goes through `default`, or is a TypeError."""
    if _ENCODERS is None:  # pragma: no cover
        import json

        return json.dumps(value, sort_keys=sort_keys, default=default)
    encode = _ENCODERS[sort_keys] if default is None else _encoder(sort_keys, default)
    return "".join(encode(value, 0))
