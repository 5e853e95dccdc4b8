"""model.iso and model.parse_iso without datetime give exactly what the datetime versions gave."""
from __future__ import annotations

import random
import time
from datetime import datetime, timezone

import pytest

from hbwrap.model import iso, parse_iso


def datetime_iso(ts):
    """iso() as it was written with datetime."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def datetime_parse_iso(text):
    """parse_iso() as it was written with datetime."""
    if not text:
        return None
    try:
        return datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


def instants():
    rng = random.Random(16)
    fixed = [0, 0.0, -1.5, -0.0000005, 1e9, 1.0005, 1.0015, 0.0005, 0.9999995, 1.9999996, 1.0000005, 2.0000015,
             951782400.0, 951868799.999, 4107542400.5, 253402300799.999, -62135596800.0, 1700000000, time.time()]
    return (fixed + [rng.uniform(-6.2e10, 2.5e11) for _ in range(3000)]
            + [rng.uniform(1.6e9, 1.9e9) for _ in range(3000)]
            + [round(rng.uniform(1.6e9, 1.9e9), 3) for _ in range(3000)]
            + [rng.randrange(0, 2 ** 33) + rng.randrange(0, 10 ** 6) / 1e6 for _ in range(3000)])


def test_iso_matches_datetime():
    for ts in instants():
        assert iso(ts) == datetime_iso(ts), ts
    assert iso(None) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e20, -1e20, 253402300800.0])
def test_iso_refuses_what_datetime_refused(bad):
    with pytest.raises((ValueError, OverflowError, OSError)) as new:
        iso(bad)
    with pytest.raises((ValueError, OverflowError, OSError)) as old:
        datetime_iso(bad)
    assert issubclass(new.type, (ValueError, OverflowError)) == issubclass(old.type, (ValueError, OverflowError))


def spellings(text: str) -> list[str]:
    """`text` (as iso() writes it) spelled the other ways a state file or an answer might hold it."""
    body = text[:-1]
    return [text, body + "+00:00", body + "+0000", body + "-00:00", body + "+05:30", body + "-0130",
            body + "+23:59", text[:-4] + "Z", text[:-4] + ".1Z", text[:-4] + ".123456Z", text[:-4] + ".1234567Z",
            body, body + "+24:00", body + "+0560", text.replace("T", " "), text.replace("T", "t"),
            text.lower(), text[:10], body + "+05", body + "+05:30:15"]


def test_parse_iso_matches_datetime_on_what_iso_writes():
    for ts in instants():
        for text in spellings(datetime_iso(ts)):
            assert parse_iso(text) == datetime_parse_iso(text), text


GARBAGE = ["", None, "Z", "now", "2024", "2024-13-01T00:00:00.000Z", "2024-02-30T00:00:00.000Z",
           "2023-02-29T00:00:00.000Z", "2024-02-29T00:00:00.000Z", "2000-02-29T12:00:00.000Z",
           "1900-02-29T00:00:00.000Z", "2024-01-01T24:00:00.000Z", "2024-01-01T23:60:00.000Z",
           "2024-01-01T23:59:60.000Z", "2024-01-01T23:59:61.000Z", "0000-01-01T00:00:00.000Z",
           "0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "0001-01-01T00:00:00.000+01:00",
           "9999-12-31T23:59:59.999-01:00", "2024-1-5T1:2:3.4Z", "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00.000ZZ",
           "2024-01-01T00:00:00.000 Z", " 2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.000Z\n",
           "２０２４-01-01T00:00:00.000Z", "2024-01-01T00:00:00,5Z", "2024-W01-1", "2024-001", "20240101T000000Z",
           "2024-01-01T00:00:00.000+99:00", "2024-01-01T00:00:00.000-2359", "2024-01-01T00:00:00.000Z+01:00",
           "2024-01-01T00:00:00.000+01:00Z", "2024-01-01T10:20:30", "2024-01-01T10:20:30.5", "2024-01-01x10:20:30Z",
           "2024-06-15T12:00:00.000000+00:00"]


@pytest.mark.parametrize("text", GARBAGE)
def test_parse_iso_matches_datetime_on_odd_and_bad_input(text):
    assert parse_iso(text) == datetime_parse_iso(text)


def test_parse_iso_reads_its_own_output_back_to_the_millisecond():
    for ts in instants()[:2000]:
        if ts < -30610224000:  # before the year 1000 strftime writes the year without leading zeros
            assert parse_iso(iso(ts)) is None
            continue
        back = parse_iso(iso(ts))
        assert back is not None and abs(back - ts) < 0.001 + 1e-6 * abs(ts) / 1e9, ts


def test_parse_iso_raises_for_non_strings_as_before():
    for value in (b"2024-01-01T00:00:00.000Z", 1700000000):
        with pytest.raises(Exception) as new:
            parse_iso(value)
        with pytest.raises(Exception) as old:
            datetime_parse_iso(value)
        assert new.type is old.type


def test_parse_iso_matches_datetime_on_mutations_of_its_own_output():
    rng = random.Random(1601)
    alphabet = "0123456789+-:.TZ tz١２"
    texts = [datetime_iso(ts) for ts in instants()[:1500]]
    for text in texts:
        for _ in range(4):
            chars = list(text[:-1] + rng.choice(["Z", "+00:00", "-0530", "+2359"]))
            for _ in range(rng.randint(1, 2)):
                at = rng.randrange(len(chars))
                op = rng.randrange(3)
                if op == 0:
                    chars[at] = rng.choice(alphabet)
                elif op == 1:
                    chars.insert(at, rng.choice(alphabet))
                else:
                    del chars[at]
            mutated = "".join(chars)
            assert parse_iso(mutated) == datetime_parse_iso(mutated), mutated
