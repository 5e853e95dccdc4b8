"""The retry-after marker (`retry-after: 15m`): its default pattern and the delay its value asks for."""
from __future__ import annotations

import re

from hbwrap.errors import HbwrapError
from hbwrap.options import DEFAULT_RETRY_AFTER_PATTERN, parse_duration  # noqa: F401  (its home is options)

_DATE_HINT = re.compile(r"[A-Za-z]{3},\s")  # an HTTP-date starts with the day name: "Wed, 21 Oct 2015 ..."


def parse_retry_after(value: str, *, now_wall: float | None = None) -> float | None:
    """Seconds to wait from a retry-after value; None when the value means nothing usable.

    Accepted: every duration `--timeout` accepts (`90`, `1.5`, `250ms`, `15m`, `1h30m`, `2d`; case does
    not matter), optionally in quotes; and, when `now_wall` (epoch seconds) is given, an HTTP-date as in
    the HTTP `Retry-After` header (`Wed, 21 Oct 2015 07:28:00 GMT`), which gives the time left until
    then (0 when it has passed). The default pattern captures no spaces, so a date needs a pattern of
    your own (`^Retry-After: (.+)$`). Never raises.
    """
    if not isinstance(value, str):
        return None
    text = value.strip().strip("\"'").strip()
    if not text:
        return None
    if _DATE_HINT.match(text):
        return _seconds_until(text, now_wall)
    try:
        return parse_duration(text, "retry-after")
    except HbwrapError:
        return None


def _seconds_until(text: str, now_wall: float | None) -> float | None:
    if now_wall is None:
        return None
    from email.utils import parsedate_to_datetime  # only for a date: the email package is not small

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:  # no zone: ambiguous, as RFC 9110 requires GMT
        return None
    return max(0.0, when.timestamp() - now_wall)


def match_retry_after(pattern: re.Pattern[str], line: str, *, now_wall: float | None = None) -> float | None:
    """The delay a line asks for if it matches `pattern` (group `delay`, else group 1, else the match)."""
    m = pattern.search(line)
    if not m:
        return None
    if "delay" in pattern.groupindex:
        value = m.group("delay")
    elif pattern.groups:
        value = m.group(1)
    else:
        value = m.group(0)
    return parse_retry_after(value or "", now_wall=now_wall)
