"""Where keys and table headers stand in TOML text, so config errors can say FILE:LINE (tomllib gives no key positions)."""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

# A key's full dotted path, e.g. ("jobs", "research", "timeout"), or a table's, e.g. ("jobs", "research").
KeyPath = tuple[str, ...]


def _parse_dotted_key(s: str, i: int) -> tuple[KeyPath, int] | None:
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
    """Scan a value from s[i] to the end of the line; `st` carries open brackets and strings to the next line."""
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


def scan_locations(text: str) -> tuple[dict[KeyPath, int], dict[KeyPath, int], list[tuple[KeyPath, int]]]:
    """Line numbers of keys (full dotted paths) and table headers, and repeated keys (for duplicate errors).

    The text is scanned line by line, skipping the inside of multi-line strings and arrays.
    """
    keys: dict[KeyPath, int] = {}
    tables: dict[KeyPath, int] = {}
    repeats: list[tuple[KeyPath, int]] = []
    table: KeyPath = ()
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
