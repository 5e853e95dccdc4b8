"""hbwrap.logwriter and hbwrap.logfollower: the log writer/follower pair over the layout of hbwrap.output, tail_bytes."""
import os
import random

import pytest

from hbwrap.logfollower import LogFollower, tail_bytes
from hbwrap.logwriter import LogWriter
from hbwrap.output import STDERR, STDOUT, log_position


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
    assert w2.failure is None and w2.error is None, "reopening an index is no failure (it was EBADF)"
    w2.write(STDERR, b"two\n")
    assert w2.failure is None
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


@pytest.mark.parametrize("planted", ["output.log", "output.idx"])
def test_writer_and_follower_never_go_through_a_symlink(tmp_path, planted):
    from hbwrap.errors import StateError

    victim = tmp_path / "victim"
    victim.write_bytes(b"G 0\nsecret\n")
    (tmp_path / planted).symlink_to(victim)
    log, idx = tmp_path / "output.log", tmp_path / "output.idx"
    with pytest.raises(StateError, match="symbolic link"):
        LogWriter(log, idx, 1000)
    with pytest.raises(StateError, match="symbolic link"):
        LogFollower(log, idx, 0, 0).read()
    with pytest.raises(StateError, match="symbolic link"):
        tail_bytes(tmp_path / planted, None)
    assert victim.read_bytes() == b"G 0\nsecret\n"


# --- a disk that refuses writes (a file size limit: EFBIG, in a child process) ----------------------

REFUSING = r'''
import json, os, resource, sys
from pathlib import Path
from hbwrap.logwriter import LogWriter
from hbwrap.output import STDERR, STDOUT

log, idx = Path(sys.argv[1]), Path(sys.argv[2])
now = [0.0]
w = LogWriter(log, idx, 1 << 30, clock=lambda: now[0])
steps = []

def write(stream, data):
    lost = w.write(stream, data)
    steps.append([stream, data.decode(), lost, list(w.position)])

def limit(size):
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

for step in json.loads(sys.argv[3]):
    if step[0] == "limit":
        limit(step[1])
    elif step[0] == "unlimit":
        limit(resource.RLIM_INFINITY)
    elif step[0] == "later":
        now[0] += 100.0
    else:
        write(step[0], step[1].encode())
w.close()
print(json.dumps({"steps": steps, "missing": w.missing, "gap": w.gap}))
'''


def run_refusing(tmp_path, steps, prefill_idx: bytes | None = None):
    import json
    import subprocess
    import sys

    log, idx = paths(tmp_path)
    if prefill_idx is not None:
        idx.write_bytes(prefill_idx)
        idx.chmod(0o600)
    r = subprocess.run([sys.executable, "-c", REFUSING, str(log), str(idx), json.dumps(steps)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), log, idx


def follow_all(log, idx):
    from hbwrap.output import GAP

    f = LogFollower(log, idx, 0, 0, gaps=True)
    pieces = []
    while True:
        got = f.read()
        if not got:
            return pieces
        pieces += [(s, d) if s != GAP else (GAP, d.size) for s, d in got]


def test_output_the_disk_refuses_is_handed_back_and_its_gap_recorded_in_place(tmp_path):
    # (with EFBIG the writer learns that space is back only by trying, every RETRY_MIN_S at first: the
    # write right after the limit went is still refused)
    out, log, idx = run_refusing(tmp_path, [
        ["O", "a" * 100], ["limit", 150], ["O", "b" * 100], ["E", "c" * 30], ["O", "d" * 20],
        ["unlimit"], ["O", "e" * 40], ["later"], ["E", "f" * 10]])
    assert [step[2] for step in out["steps"]] == [0, 50, 30, 20, 40, 0], out
    assert {tuple(step[3]) for step in out["steps"][1:5]} == {(0, 150)}  # the gap's place: where the log stops
    assert out["missing"] == 140 and out["gap"] == 0
    assert log.read_bytes() == b"a" * 100 + b"b" * 50 + b"f" * 10
    # the follower: the bytes in the log, and at offset 150 gaps adding up to what was handed back
    got = follow_all(log, idx)
    assert merge([(s, d) for s, d in got if s != "L"]) == [(STDOUT, b"a" * 100 + b"b" * 50), (STDERR, b"f" * 10)]
    first_gap = next(i for i, (s, _) in enumerate(got) if s == "L")
    assert sum(len(d) for _, d in got[:first_gap]) == 150
    assert all(s == "L" for s, _ in got[first_gap:-1]) and sum(d for s, d in got if s == "L") == 140


def test_the_writer_tries_again_without_filling_the_index(tmp_path):
    # while the disk refuses the log, output goes on being refused without a gap line per write
    steps = [["O", "a" * 10], ["limit", 10]] + [["O", "x" * 5]] * 200 + [["unlimit"], ["later"], ["O", "z"]]
    out, log, idx = run_refusing(tmp_path, steps)
    assert out["missing"] == 1000 and log.read_bytes() == b"a" * 10 + b"z"
    gap_lines = [line for line in idx.read_bytes().splitlines() if line.startswith(b"L ")]
    assert 1 <= len(gap_lines) <= 3, idx.read_bytes()
    assert sum(int(line.split()[2]) for line in gap_lines) == 1000


def test_an_index_line_the_disk_takes_only_in_part_is_cut_off_again(tmp_path):
    # the index is 2 bytes short of the limit: the next stream switch line is torn, then removed, so that
    # no reader ever finds it glued to the next line
    prefill = b"G 0\n" + b"O 0\n" * 20
    out, log, idx = run_refusing(tmp_path, [["limit", len(prefill) + 2], ["E", "refused"], ["unlimit"], ["later"],
                                            ["E", "taken"]], prefill_idx=prefill)
    assert [step[2] for step in out["steps"]] == [7, 0]
    text = idx.read_bytes()
    assert text.startswith(prefill) and text.endswith(b"\n")
    assert text[len(prefill):].splitlines() == [b"L 0 7 0", b"E 0"], text
    assert follow_all(log, idx) == [("L", 7), (STDERR, b"taken")]


def test_a_follower_without_gaps_reads_over_them_and_history_is_not_reported(tmp_path):
    out, log, idx = run_refusing(tmp_path, [["O", "a" * 10], ["limit", 10], ["O", "lost"], ["unlimit"], ["later"],
                                            ["O", "b"]])
    assert merge(LogFollower(log, idx, 0, 0).read()) == [(STDOUT, b"a" * 10 + b"b")]
    later = LogFollower(log, idx, 0, 10, gaps=True, history=idx.stat().st_size)
    assert merge(later.read()) == [(STDOUT, b"b")]  # the gap at 10 was recorded before this reader started
