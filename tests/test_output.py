"""hbwrap.output: the log writer/follower pair, tail_bytes."""
import os
import random

import pytest

from hbwrap.output import STDERR, STDOUT, LogFollower, LogWriter, log_position, tail_bytes


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
