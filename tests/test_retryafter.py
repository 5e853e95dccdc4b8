"""parse_retry_after / match_retry_after: duration semantics of --timeout, HTTP-dates, the default pattern."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from hbwrap.retryafter import DEFAULT_RETRY_AFTER_PATTERN, match_retry_after, parse_retry_after

NOW = datetime(2015, 10, 21, 7, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("value, seconds", [
    ("90", 90.0), ("1.5", 1.5), ("15m", 900.0), ("1h30m", 5400.0), ("250ms", 0.25), ("2d", 172800.0),
    ("15M", 900.0), (" 3s ", 3.0), ('"120"', 120.0), ("'5m'", 300.0), ("0", 0.0),
])
def test_durations(value, seconds):
    assert parse_retry_after(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "  ", "soon", "-5", "15x", "1h30", "15m.", "nan", "inf", "1e400", "m"])
def test_values_that_mean_nothing_give_none(value):
    assert parse_retry_after(value) is None


def test_not_a_string_gives_none():
    assert parse_retry_after(None) is None  # type: ignore[arg-type]


def test_http_date_gives_the_time_left():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_wall=NOW) == pytest.approx(28 * 60)
    assert parse_retry_after("Wed, 21 Oct 2015 06:00:00 GMT", now_wall=NOW) == 0.0  # already passed


def test_http_date_needs_a_clock_and_a_zone():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00", now_wall=NOW) is None
    assert parse_retry_after("Wed, 99 Foo 2015 07:28:00 GMT", now_wall=NOW) is None


def test_default_pattern_lines():
    pattern = re.compile(DEFAULT_RETRY_AFTER_PATTERN)
    assert match_retry_after(pattern, "retry-after: 15m") == 900.0
    assert match_retry_after(pattern, "  retry_after=3s  ") == 3.0
    assert match_retry_after(pattern, "retry after:90") == 90.0
    assert match_retry_after(pattern, "retry-after: soon") is None
    assert match_retry_after(pattern, "please retry-after: 15m") is None
    assert match_retry_after(pattern, "retry-after: 15m now") is None


def test_custom_patterns_groups():
    named = re.compile(r"rate limited, wait (?P<delay>\S+) \(attempt (\d+)\)")
    assert match_retry_after(named, "rate limited, wait 2m (attempt 3)") == 120.0
    header = re.compile(r"^Retry-After: (.+)$")
    assert match_retry_after(header, "Retry-After: Wed, 21 Oct 2015 07:01:00 GMT", now_wall=NOW) == 60.0
    whole = re.compile(r"\d+m")
    assert match_retry_after(whole, "backing off 7m") == 420.0
