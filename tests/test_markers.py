"""hbwrap.markers: progress and fatal markers over arbitrary chunks, line by line (\\n, \\r\\n or \\r end a line)."""
import random
import re

import pytest

from hbwrap.markers import LINE_CAP, MarkerScanner
from hbwrap.options import DEFAULT_PROGRESS_PATTERN

DEFAULT = re.compile(DEFAULT_PROGRESS_PATTERN)


def scanner(progress=(DEFAULT_PROGRESS_PATTERN,), fatal=()):
    return MarkerScanner([re.compile(p) for p in progress], [re.compile(p) for p in fatal])


def scan(s: MarkerScanner, chunks) -> list:
    found = []
    for chunk in chunks:
        found += s.feed(chunk)
    return found + s.flush()


def reference(data: bytes, progress, fatal) -> list:
    """What line-by-line matching says: \\r\\n, \\r and \\n each end a line; lines capped at LINE_CAP bytes."""
    found = []
    lines = re.split(rb"\r\n|\r|\n", data)
    if lines and not lines[-1]:
        lines.pop()  # after the last line end: no line
    for raw in lines:
        text = raw[:LINE_CAP].decode("utf-8", "replace")
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
          b" 10%|#  | page-3\rcheckpoint: cr-1\r 20%|## | page-4\rcheckpoint: cr-2\r\n"
          b"\r\r\n\n\r"
          b"checkpoint: last-no-newline")


def test_default_pattern_on_whole_input():
    found = scan(scanner(fatal=["account suspended"]), [SAMPLE])
    assert found == [("progress", "page-1"), ("progress", "page-2"), ("fatal", "ERROR: account suspended"),
                     ("progress", "été-3"), ("progress", "cr-1"), ("progress", "cr-2"),
                     ("progress", "last-no-newline")]


@pytest.mark.parametrize("progress, fatal", [
    ((DEFAULT_PROGRESS_PATTERN,), ("account suspended",)),   # literal prefilter path
    ((r"(?i)checkpoint[:=]\s*(\S+)",), ()),                   # no literal (case-insensitive): line-by-line path
    ((r"page-(\d)", r"(?P<x>\w+)-(?P<checkpoint>\d)"), (r"^ERROR",)),
    ((r"[a-z]+-\d",), (r"\xff|suspended",)),                 # no group: the whole match; no usable literal
    ((r"^(\s*)$",), ()),                                      # empty lines: a \r\n split in two is one line end
    ((r"(\d+)%\|",), (r"page-4$",)),                          # progress-bar segments between \r
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


# --- \r ends a line (progress bars) ---------------------------------------------------------------

def test_carriage_returns_end_lines_for_every_kind_of_marker():
    s = scanner(fatal=[r"^ERROR (.*)"])
    found = scan(s, [b"checkpoint:a\rcheckpoint:b\r...\rERROR quota\rcheckpoint:c\r"])
    assert found == [("progress", "a"), ("progress", "b"), ("fatal", "ERROR quota"), ("progress", "c")]


@pytest.mark.parametrize("chunks", [
    [b"checkpoint:a\r", b"\ncheckpoint:b\n"],
    [b"checkpoint:a", b"\r", b"\n", b"checkpoint:b\r"],
    [b"checkpoint:a\r\ncheckpoint:b", b"\r\n"],
])
def test_crlf_split_across_chunks_is_one_line_end(chunks):
    assert scan(scanner(progress=[r"^(.*)$"]), chunks) == [("progress", "checkpoint:a"), ("progress", "checkpoint:b")]


def test_tqdm_style_progress_bar():
    frames = b"".join(b"\r%3d%%|%-10s| %d/10 [00:0%d<00:00]" % (i * 10, b"#" * i, i, i) for i in range(11))
    s = scanner(progress=[r"\| (\d+)/10 \["])
    assert [v for _, v in scan(s, [frames[:37], frames[37:], b"\n"])] == [str(i) for i in range(11)]


def test_retry_after_markers_use_the_same_line_ends():
    s = MarkerScanner([DEFAULT], [], retry_after=[re.compile(r"^\s*retry[-_ ]after[:=]\s*(\S+)\s*$")])
    assert scan(s, [b"429 too many\rretry-after: 15m\r\nRetry_After=1\n"]) == [("retry_after", "15m")]


def test_the_literal_prefilter_finds_markers_after_carriage_returns_in_a_big_chunk():
    data = b"noise line\n" * 5000 + b" 50%\rcheckpoint: deep\r" + b"more\r" * 5000 + b"checkpoint: end\n"
    assert scan(scanner(fatal=["account suspended"]), [data]) == [("progress", "deep"), ("progress", "end")]


# --- through the real binary -------------------------------------------------------------------------

CR_OUTPUT = b"checkpoint:a\rcheckpoint:b\r 10%|#   |\r\xff\xfe binary\r\ncheckpoint:c\r"


def test_cr_markers_through_hbwrap_are_checkpoints_and_pass_through_byte_for_byte(hb):
    r = hb.run("run", "--name", "cr", "--", *hb.agent(f"raw:{CR_OUTPUT.hex()}", "exit:0"))
    assert r.returncode == 0, r
    assert r.stdout == CR_OUTPUT
    assert hb.log_bytes("cr") == CR_OUTPUT
    assert hb.status("cr")[0]["checkpoint"] == "c"
    assert "a" in [e["checkpoint"] for e in hb.events("cr") if e["event"] == "checkpoint"]


def test_a_progress_bar_that_only_uses_carriage_returns_is_progress(hb):
    """tqdm-style output: no newline for seconds, a checkpoint every 0.2 s; --progress-timeout 1 must not fire."""
    script = ("import sys, time\n"
              "for i in range(12):\n"
              "    sys.stdout.write(f'\\rcheckpoint: step-{i}'); sys.stdout.flush(); time.sleep(0.2)\n")
    r = hb.run("run", "--name", "bar", "--progress-timeout", "1", "--restart", "never", "--",
               "python3", "-c", script, hb.tag, timeout=60)
    assert r.returncode == 0, r
    assert hb.status("bar")[0]["checkpoint"] == "step-11"
    assert "stall" not in [e["event"] for e in hb.events("bar")]


def _scan_with_repeat_hints(s: MarkerScanner, chunks) -> list:
    """Scan as the Observer does with --repeat-timeout: each chunk's uniform line from the detector first."""
    from hbwrap.repeat import RepeatDetector

    det = RepeatDetector()
    found = []
    for i, chunk in enumerate(chunks):
        det.feed(chunk, float(i))
        found += s.feed(chunk, det.uniform_line)
    return found + s.flush()


LOOPS = [
    b"".join(b"%08d waiting for the lock\n" % i for i in range(3000)),       # no literal: skipped
    b"".join(b"checkpoint: page-%d\n" % i for i in range(3000)),             # the literal on every line
    b"".join(b"step %d done\n" % (i % 10) for i in range(3000)),              # a literal with a digit
    b"".join(b"retry %d\r\n" % i for i in range(3000)),                       # \r\n line ends
    b"".join(b"checkpoint: 7\rprogress %d%%\r" % (i % 100) for i in range(2000)),  # two lines a unit
    b"".join(b"%d ERROR: account suspended\n" % i for i in range(2000)),
]


@pytest.mark.parametrize("loop", range(len(LOOPS)))
def test_uniform_line_hints_never_change_what_is_found(loop):
    # the hint lets a chunk that is one line repeated skip the literal search; a marker whose literal (digits
    # masked) is in that line must still be found on every line, in every chunking
    progress = [DEFAULT_PROGRESS_PATTERN, r"^step 4 done$"]
    fatal = [r"account suspended"]
    data = LOOPS[loop] + b"checkpoint: after-the-loop\n"
    rng = random.Random(loop)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), 6))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        compiled = ([re.compile(p) for p in progress], [re.compile(p) for p in fatal])
        expected = reference(data, *compiled)
        assert _scan_with_repeat_hints(MarkerScanner(*compiled), chunks) == expected
        assert scan(MarkerScanner(*compiled), chunks) == expected


def test_a_uniform_chunk_without_the_literal_is_not_searched():
    from hbwrap.repeat import RepeatDetector

    det = RepeatDetector()
    chunk = b"x\n" + b"".join(b"%08d waiting for the lock\n" % i for i in range(3000))
    det.feed(chunk, 1.0)
    assert det.uniform_line == b"00000000 waiting for the lock"
    s = scanner()
    s._finders = None  # a search would fail: the hint must settle the body
    assert s.feed(chunk, det.uniform_line) == []
    det.feed(b"a\nb\nc\n", 2.0)
    assert det.uniform_line is None  # lines that differ: no hint
