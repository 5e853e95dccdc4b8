"""hbwrap.output: marker matching over arbitrary chunks, the log writer/follower pair, tail_bytes."""
import os
import random
import re

import pytest

from hbwrap.options import DEFAULT_PROGRESS_PATTERN
from hbwrap.output import LINE_CAP, STDERR, STDOUT, LogFollower, LogWriter, MarkerScanner, log_position, tail_bytes

DEFAULT = re.compile(DEFAULT_PROGRESS_PATTERN)


def scanner(progress=(DEFAULT_PROGRESS_PATTERN,), fatal=()):
    return MarkerScanner([re.compile(p) for p in progress], [re.compile(p) for p in fatal])


def scan(s: MarkerScanner, chunks) -> list:
    found = []
    for chunk in chunks:
        found += s.feed(chunk)
    return found + s.flush()


def reference(data: bytes, progress, fatal) -> list:
    """What line-by-line matching says (lines capped at LINE_CAP bytes, a final CR dropped)."""
    found = []
    for raw in data.split(b"\n"):
        if not raw:
            continue
        text = raw[:LINE_CAP].decode("utf-8", "replace")
        text = text[:-1] if text.endswith("\r") else text
        for p in progress:
            m = p.search(text)
            if m:
                if "checkpoint" in p.groupindex:
                    value = m.group("checkpoint")
                elif p.groups:
                    value = m.group(1)
                else:
                    value = m.group(0)
                found.append(("progress", value if value is not None else m.group(0)))
                break
        for p in fatal:
            if p.search(text):
                found.append(("fatal", text[:500]))
                break
    return found


SAMPLE = (b"starting\n"
          b"checkpoint: page-1\n"
          b"noise checkpoint: not-at-start\n"
          b"  checkpoint=page-2  \r\n"
          b"\xff\xfe invalid utf-8 \xc3\n"
          b"ERROR: account suspended\n"
          b"checkpoint:\xc3\xa9t\xc3\xa9-3\n"
          b"\n"
          b"checkpoint: last-no-newline")


def test_default_pattern_on_whole_input():
    found = scan(scanner(fatal=["account suspended"]), [SAMPLE])
    assert found == [("progress", "page-1"), ("progress", "page-2"), ("fatal", "ERROR: account suspended"),
                     ("progress", "été-3"), ("progress", "last-no-newline")]


@pytest.mark.parametrize("progress, fatal", [
    ((DEFAULT_PROGRESS_PATTERN,), ("account suspended",)),   # literal prefilter path
    ((r"(?i)checkpoint[:=]\s*(\S+)",), ()),                   # no literal (case-insensitive): line-by-line path
    ((r"page-(\d)", r"(?P<x>\w+)-(?P<checkpoint>\d)"), (r"^ERROR",)),
    ((r"[a-z]+-\d",), (r"\xff|suspended",)),                 # no group: the whole match; no usable literal
])
def test_every_split_point_gives_the_same_markers(progress, fatal):
    compiled_p = [re.compile(p) for p in progress]
    compiled_f = [re.compile(p) for p in fatal]
    expected = reference(SAMPLE, compiled_p, compiled_f)
    assert expected, "the sample must contain markers for this pattern set"
    for cut in range(len(SAMPLE) + 1):
        got = scan(MarkerScanner(compiled_p, compiled_f), [SAMPLE[:cut], SAMPLE[cut:]])
        assert got == expected, f"split at {cut}: {SAMPLE[:cut][-20:]!r} | {SAMPLE[cut:][:20]!r}"


def test_random_chunking_gives_the_same_markers():
    rng = random.Random(42)
    lines = []
    for i in range(2000):
        kind = rng.random()
        if kind < 0.1:
            lines.append(f"checkpoint: item-{i}".encode())
        elif kind < 0.12:
            lines.append(f"FATAL {i}".encode())
        else:
            lines.append(bytes(rng.choice(b"abc xyz:=\t\r") for _ in range(rng.randrange(0, 80))))
    data = b"\n".join(lines) + b"\n"
    p, f = [DEFAULT], [re.compile(r"FATAL \d+")]
    expected = reference(data, p, f)
    for seed in range(5):
        r = random.Random(seed)
        chunks, pos = [], 0
        while pos < len(data):
            n = r.choice((1, 2, 7, 100, 4096, 70000))
            chunks.append(data[pos:pos + n])
            pos += n
        assert scan(MarkerScanner(p, f), chunks) == expected


def test_marker_split_byte_by_byte():
    data = b"checkpoint: page-7\r\n"
    assert scan(scanner(), [data[i:i + 1] for i in range(len(data))]) == [("progress", "page-7")]


@pytest.mark.parametrize("line, expected", [
    (b"checkpoint: a\r\n", "a"),
    (b"checkpoint=b c \r\n", "b c"),
    (b"done 42\r\n", "42"),
])
def test_crlf_lines(line, expected):
    s = scanner(progress=[DEFAULT_PROGRESS_PATTERN, r"^done (\d+)$"])
    assert scan(s, [line]) == [("progress", expected)]


@pytest.mark.parametrize("pattern, line, value", [
    (r"page (\d+) of \d+", b"fetched page 7 of 9", "7"),                        # group 1
    (r"(?P<url>\S+) saved as (?P<checkpoint>\S+)", b"http://x saved as row-5", "row-5"),  # named group wins
    (r"(\w+) saved as (?P<checkpoint>\S+)", b"url saved as row-6", "row-6"),
    (r"STEP-\d+", b"now at STEP-12 ok", "STEP-12"),                              # no group: whole match
    (r"item (\d+)?done", b"item done", "item done"),                             # group did not take part
])
def test_custom_progress_patterns(pattern, line, value):
    assert scan(scanner(progress=[pattern]), [line + b"\n"]) == [("progress", value)]


def test_a_custom_pattern_replaces_the_default():
    assert scan(scanner(progress=[r"page (\d+)"]), [b"checkpoint: x\npage 3\n"]) == [("progress", "3")]


def test_first_matching_progress_pattern_wins_per_line():
    s = scanner(progress=[r"a(\d)", r"(\d)b"])
    assert scan(s, [b"a1 2b\n3b\n"]) == [("progress", "1"), ("progress", "3")]


def test_fatal_patterns():
    s = scanner(fatal=[r"account suspended", r"(?i)rate.limit"])
    found = scan(s, [b"ok\nERROR account suspended!\nRATE LIMIT hit\r\nfine\n"])
    assert found == [("fatal", "ERROR account suspended!"), ("fatal", "RATE LIMIT hit")]


def test_a_line_can_be_progress_and_fatal():
    s = scanner(fatal=[r"suspended"])
    assert scan(s, [b"checkpoint: suspended\n"]) == [("progress", "suspended"), ("fatal", "checkpoint: suspended")]


@pytest.mark.parametrize("pattern, line, value", [
    (r"^\d+/\d+ done$", b"12/40 done", "12/40 done"),       # literal " done"
    (r"^[0-9]+%$", b"75%", "75%"),                          # no literal of 2+ chars
    (r"(?i)PROGRESS (\S+)", b"progress p9", "p9"),          # case-insensitive: no literal prefilter
    (r"\bcp\s*(\d+)", b"x cp 4", "4"),
    (r"(?:ab|cd)(\d)", b"cd5", "5"),                        # literals only inside alternatives
])
def test_patterns_with_and_without_extractable_literals(pattern, line, value):
    data = b"noise\n" + line + b"\nmore noise\n"
    assert scan(scanner(progress=[pattern]), [data]) == [("progress", value)]
    # and in the middle of a big chunk (the prefiltered body path)
    assert scan(scanner(progress=[pattern]), [b"x\n" * 1000 + line + b"\n" + b"y\n" * 1000]) == [("progress", value)]


def test_scoped_case_insensitive_group_still_matches():
    pattern = r"(?i:checkpoint)\s+(\d+)"
    assert re.search(pattern, "CHECKPOINT 5")
    assert scan(scanner(progress=[pattern]), [b"CHECKPOINT 5\nCheckpoint 6\n"]) == [("progress", "5"), ("progress", "6")]


def test_long_lines_stay_bounded_and_later_lines_still_match():
    s = scanner()
    found = s.feed(b"checkpoint: v")
    block = b"y" * (1 << 20)
    for _ in range(20):  # a 20 MiB line, no newline yet
        found += s.feed(block)
        assert len(s._carry) <= LINE_CAP
    found += s.feed(b"\ncheckpoint: after\n")
    found += s.flush()
    assert len(found) == 2
    kind, value = found[0]
    assert kind == "progress" and value.startswith("vyyy") and len(value) <= LINE_CAP
    assert found[1] == ("progress", "after")


def test_long_line_in_the_middle_of_a_chunk_is_matched_on_its_head():
    s = scanner()
    data = b"a\ncheckpoint: head" + b"z" * (3 * LINE_CAP) + b"\ncheckpoint: next\n"
    found = scan(s, [data])
    assert [k for k, _ in found] == ["progress", "progress"]
    assert found[0][1].startswith("headzzz") and len(found[0][1]) <= LINE_CAP
    assert found[1] == ("progress", "next")


def test_marker_beyond_line_cap_is_not_seen():
    s = scanner()
    assert scan(s, [b"x" * (LINE_CAP + 10) + b" checkpoint: hidden\n"]) == []


def test_no_patterns_at_all():
    assert scan(MarkerScanner([], []), [b"checkpoint: x\n"]) == []


# --- LogWriter + LogFollower ----------------------------------------------------------------------

def merge(pieces):
    """Adjacent pieces of the same stream joined: the framing of reads is not part of the contract."""
    out = []
    for stream, data in pieces:
        if not data:
            continue
        if out and out[-1][0] == stream:
            out[-1] = (stream, out[-1][1] + data)
        else:
            out.append((stream, data))
    return out


def paths(tmp_path):
    return tmp_path / "output.log", tmp_path / "output.idx"


WRITES = [(STDOUT, b"hello "), (STDOUT, b"world\n"), (STDERR, b"oops\n"), (STDOUT, b"\x00\xff binary"),
          (STDERR, b"e2"), (STDERR, b"e3\n"), (STDOUT, b"done\n")]


def test_round_trip_keeps_bytes_and_streams(tmp_path):
    log, idx = paths(tmp_path)
    w = LogWriter(log, idx, 10_000)
    f = LogFollower(log, idx, 0, 0)
    got = []
    for i, (stream, data) in enumerate(WRITES):
        w.write(stream, data)
        if i % 2:
            got += f.read()
    got += f.read()
    w.close()
    assert merge(got) == merge(WRITES)
    assert log.read_bytes() == b"".join(d for _, d in WRITES)
    assert f.read() == []


def test_follower_started_before_the_log_exists(tmp_path):
    log, idx = paths(tmp_path)
    f = LogFollower(log, idx, 0, 0)
    assert f.read() == []
    w = LogWriter(log, idx, 10_000)
    w.write(STDERR, b"first")
    assert merge(f.read()) == [(STDERR, b"first")]


def test_follower_reads_in_bounded_pieces(tmp_path):
    log, idx = paths(tmp_path)
    w = LogWriter(log, idx, 1 << 30)
    w.write(STDOUT, b"a" * 100_000)
    f = LogFollower(log, idx, 0, 0)
    first = f.read(limit=30_000)
    assert sum(len(d) for _, d in first) <= 30_000
    rest = []
    while True:
        piece = f.read(limit=30_000)
        if not piece:
            break
        rest += piece
    assert b"".join(d for _, d in first + rest) == b"a" * 100_000


@pytest.mark.parametrize("max_size", [7, 10, 64, 1000])
def test_rotation_with_a_follower_keeping_up(tmp_path, max_size):
    log, idx = paths(tmp_path)
    w = LogWriter(log, idx, max_size)
    f = LogFollower(log, idx, 0, 0)
    rng = random.Random(max_size)
    writes, got = [], []
    for i in range(300):
        item = (rng.choice((STDOUT, STDERR)), bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))))
        writes.append(item)
        w.write(*item)
        got += f.read()
    got += f.read()
    w.close()
    assert merge(got) == merge(writes)
    assert f.skipped_generations == 0
    # one rotated file is kept, nothing older
    assert (tmp_path / "output.log.1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output.idx", "output.idx.1", "output.log", "output.log.1"]
    assert log.stat().st_size <= max(max_size, 20)


def test_rotation_while_the_follower_lags_one_generation(tmp_path):
    log, idx = paths(tmp_path)
    w = LogWriter(log, idx, 50)
    f = LogFollower(log, idx, 0, 0)
    w.write(STDOUT, b"0" * 10)
    got = f.read()  # the follower holds generation 0 open
    writes = [(STDOUT, b"0" * 10), (STDERR, b"1" * 30), (STDOUT, b"2" * 30)]  # 70 bytes: one rotation
    for item in writes[1:]:
        w.write(*item)
    got += f.read()
    assert merge(got) == merge(writes)


def test_log_position_is_the_end_of_the_current_generation(tmp_path):
    log, idx = paths(tmp_path)
    assert log_position(log, idx) == (0, 0)
    w = LogWriter(log, idx, 25)
    w.write(STDOUT, b"x" * 20)
    assert log_position(log, idx) == (0, 20)
    w.write(STDOUT, b"y" * 10)  # rotates
    assert log_position(log, idx) == (1, 10)
    f = LogFollower(log, idx, *log_position(log, idx))
    w.write(STDERR, b"new")
    assert merge(f.read()) == [(STDERR, b"new")]


def test_writer_reopened_continues_the_same_generation(tmp_path):
    log, idx = paths(tmp_path)
    w = LogWriter(log, idx, 1000)
    w.write(STDOUT, b"one\n")
    w.close()
    w2 = LogWriter(log, idx, 1000)
    w2.write(STDERR, b"two\n")
    f = LogFollower(log, idx, 0, 0)
    assert merge(f.read()) == [(STDOUT, b"one\n"), (STDERR, b"two\n")]


def test_follower_reading_during_rotation_does_not_repeat_output(tmp_path, monkeypatch):
    log, idx = paths(tmp_path)
    w = LogWriter(log, idx, 10)
    f = LogFollower(log, idx, 0, 0)
    got = []
    real_replace = os.replace
    calls = []

    def replace_after_a_read(src, dst):
        if not calls:  # the supervisor is a separate process: it may read at any instant of the rotation
            calls.append(src)
            got.extend(f.read(limit=1000))
        return real_replace(src, dst)

    writes = [(STDOUT, b"0123456"), (STDERR, b"abcdef"), (STDOUT, b"XYZ")]
    monkeypatch.setattr(os, "replace", replace_after_a_read)
    for item in writes:
        w.write(*item)
        got += f.read(limit=1000)
    monkeypatch.setattr(os, "replace", real_replace)
    got += f.read(limit=1000)
    assert calls, "the writer must have rotated"
    assert merge(got) == merge(writes)


# --- tail_bytes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("content, n, expected", [
    (b"a\nb\nc\n", 2, b"b\nc\n"),
    (b"a\nb\nc\n", 3, b"a\nb\nc\n"),
    (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
    (b"a\nb\nc", 2, b"b\nc"),            # no trailing newline: kept as it is
    (b"a\nb\nc\n", 1, b"c\n"),
    (b"a\nb\nc\n", 0, b""),
    (b"a\nb\nc\n", None, b"a\nb\nc\n"),
    (b"", 5, b""),
    (b"\n\n\n", 2, b"\n\n"),
    (b"\xff\x00\n\xfe\n", 1, b"\xfe\n"),
])
def test_tail_bytes(tmp_path, content, n, expected):
    p = tmp_path / "log"
    p.write_bytes(content)
    assert tail_bytes(p, n) == expected


def test_tail_bytes_across_read_blocks(tmp_path):
    p = tmp_path / "log"
    lines = [f"line {i} ".encode() + b"x" * (i % 5000) for i in range(3000)]
    p.write_bytes(b"\n".join(lines) + b"\n")
    assert tail_bytes(p, 7) == b"\n".join(lines[-7:]) + b"\n"
    assert tail_bytes(p, 2999) == b"\n".join(lines[1:]) + b"\n"


def test_tail_bytes_of_a_missing_file(tmp_path):
    assert tail_bytes(tmp_path / "nope", 3) == b""
