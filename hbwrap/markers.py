"""Progress, fatal and retry-after markers in the command's output, matched line by line over arbitrary chunks."""
from __future__ import annotations

import re

LINE_CAP = 64 * 1024  # longer lines are matched on their first LINE_CAP bytes
_LINE_END = re.compile(rb"\r\n|\r|\n")


def required_literal(pattern: re.Pattern[str]) -> bytes | None:
    """A literal that every match must contain, for a C-speed prefilter over whole chunks (None if unknown)."""
    if pattern.flags & re.IGNORECASE:
        return None
    try:
        from re import _parser as sre_parse  # type: ignore[attr-defined]
        from re._constants import LITERAL, SUBPATTERN  # type: ignore[attr-defined]
        parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:
        return None
    best = ""
    folded = False  # an inline (?i:...) anywhere: a literal could match in another case

    def walk(items) -> None:
        nonlocal best, folded
        run = ""
        for op, arg in items:
            if op is LITERAL:
                run += chr(arg)
                continue
            if len(run) > len(best):
                best = run
            run = ""
            if op is SUBPATTERN:
                if arg[1] & re.IGNORECASE:
                    folded = True
                walk(arg[-1])
        if len(run) > len(best):
            best = run

    walk(parsed)
    if folded or re.IGNORECASE & parsed.state.flags:
        return None
    return best.encode() if len(best) >= 2 else None


class MarkerScanner:
    r"""Finds progress, fatal and retry-after markers in a byte stream, line by line, with bounded memory.

    `\n`, `\r\n` and a lone `\r` each end a line, so every frame a progress bar redraws with `\r` is a
    line of its own. Lines are matched as text (UTF-8, invalid bytes replaced), without their line end.
    Chunks are first searched for a literal every match must contain (one C-level search per literal
    over the whole chunk), so ordinary output costs no per-line Python work.
    """

    def __init__(self, progress: list[re.Pattern[str]], fatal: list[re.Pattern[str]],
                 retry_after: list[re.Pattern[str]] | tuple = ()):
        self.progress, self.fatal, self.retry_after = progress, fatal, list(retry_after)
        literals = [required_literal(p) for p in (*progress, *fatal, *self.retry_after)]
        self.literals = None if any(lit is None for lit in literals) else sorted(set(literals))
        # a pure literal compiles to a fast substring search; an alternation of literals does not
        self._finders = [re.compile(re.escape(lit)) for lit in self.literals or ()]
        self._masked_literals: list[bytes] | None = None
        self._carry = bytearray()
        self._carry_full = False
        self._after_cr = False  # the last chunk ended with \r: a \n opening the next one ends no other line

    def feed(self, data: bytes, uniform_line: bytes | None = None) -> list[tuple[str, str]]:
        """Markers in the lines `data` completes.

        `uniform_line` (from RepeatDetector.feed over the same `data`): every line between the first and
        the last line end of `data` masks to it, so when no literal a marker needs, masked the same way,
        is in it, none of those lines is matched (a loop's thousands of equal lines cost one check).
        """
        found: list[tuple[str, str]] = []
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]  # the \n of a \r\n that the previous chunk began
        if not data:
            return found
        self._after_cr = data.endswith(b"\r")
        # Same length, every line end a \n (one memchr, and a fast byte-for-byte copy only if there is a \r):
        # offsets in `norm` are offsets in `data`. A \r\n becomes two line ends around an empty line, which
        # no literal can match; the split path below, which sees empty lines, splits the original bytes.
        norm = data.replace(b"\r", b"\n") if b"\r" in data else data
        first_nl = norm.find(b"\n")
        if first_nl < 0:
            self._add_carry(data)
            return found
        self._add_carry(data[:first_nl])
        self._match_line(bytes(self._carry), found)
        self._carry.clear()
        self._carry_full = False
        last_nl = norm.rfind(b"\n")
        body_start = first_nl + (2 if data[first_nl:first_nl + 2] == b"\r\n" else 1)
        body_end = last_nl - 1 if last_nl and data[last_nl - 1:last_nl + 1] == b"\r\n" else last_nl
        if body_end >= body_start and not (uniform_line is not None and self._absent_from(uniform_line)):
            self._scan_body(data, norm, body_start, body_end, found)
        self._add_carry(data[last_nl + 1:])
        return found

    def flush(self) -> list[tuple[str, str]]:
        """Match the final line when the output ends without a line end."""
        found: list[tuple[str, str]] = []
        if self._carry:
            self._match_line(bytes(self._carry), found)
        self._carry.clear()
        self._carry_full = False
        self._after_cr = False
        return found

    def _absent_from(self, masked_line: bytes) -> bool:
        """No line that masks to `masked_line` can hold a marker: it lacks every masked literal."""
        if self.literals is None:
            return False
        if self._masked_literals is None:
            # a uniform line comes only from the repeat detector, so it is imported by now
            from hbwrap.repeat import premask

            self._masked_literals = [premask(lit) for lit in self.literals]
        return not any(lit in masked_line for lit in self._masked_literals)

    def _add_carry(self, piece: bytes) -> None:
        if self._carry_full or not piece:
            return
        room = LINE_CAP - len(self._carry)
        self._carry += piece[:room]
        self._carry_full = len(piece) >= room

    def _scan_body(self, data: bytes, norm: bytes, start: int, end: int, found: list) -> None:
        r"""The lines of data[start:end], where a line end begins at `end`; `norm` is `data` with \r as \n."""
        if self.literals is None:
            lines = data[start:end].split(b"\n") if norm is data else _LINE_END.split(data[start:end])
            for line in lines:
                self._match_line(line[:LINE_CAP], found)
            return
        starts = set()
        for finder in self._finders:
            for m in finder.finditer(norm, start, end):
                pos = m.start()
                starts.add(norm.rfind(b"\n", start, pos) + 1 if pos > start else start)
        for line_start in sorted(starts):
            line_start = max(line_start, start)
            line_end = norm.find(b"\n", line_start, end + 1)
            self._match_line(norm[line_start:min(line_end, line_start + LINE_CAP)], found)

    def _match_line(self, raw: bytes, found: list) -> None:
        if self.literals is not None and not any(lit in raw for lit in self.literals):
            return
        text = raw.decode("utf-8", "replace")
        for pattern in self.progress:
            m = pattern.search(text)
            if m:
                found.append(("progress", _value(pattern, m)))
                break
        for pattern in self.fatal:
            if pattern.search(text):
                found.append(("fatal", text[:500]))
                break
        for pattern in self.retry_after:
            m = pattern.search(text)
            if m:
                found.append(("retry_after", _value(pattern, m)))
                break


def _value(pattern: re.Pattern[str], m: re.Match[str]) -> str:
    """A marker's value: the group named `checkpoint`, else group 1, else the whole match."""
    if "checkpoint" in pattern.groupindex:
        value = m.group("checkpoint")
    elif pattern.groups:
        value = m.group(1)
    else:
        value = m.group(0)
    return value if value is not None else m.group(0)
