"""RepeatDetector (--repeat-timeout): masking, the window, line ends, chunking, bounded memory; injected clock."""
from __future__ import annotations

import os
import random

import pytest

from hbwrap.repeat import KEY_PREFIX_BYTES, LINE_MAX_BYTES, RepeatDetector, _mask_keys, _PREMASK, mask_line


def feed_lines(det: RepeatDetector, lines: list[bytes], now: float) -> bool:
    return det.feed(b"".join(line + b"\n" for line in lines), now)


def test_mask_line_masks_digit_runs_and_long_hex_runs():
    assert mask_line(b"retry 17 failed: 429 id=3fa85f64") == b"retry 0 failed: 0 id=0"
    assert mask_line(b"retry 1234 failed: 503 id=deadbeefcafe") == b"retry 0 failed: 0 id=0"
    assert mask_line(b"cafe 12") == b"cafe 0"          # short hex words stay
    assert mask_line(b"batch a") != mask_line(b"batch b")


def test_chunk_level_masking_equals_the_reference_regex():
    rng = random.Random(7)
    alphabet = b"0123456789abcdefABCDEFxyz -:=\t"
    for _ in range(2000):
        lines = [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(rng.randint(1, 6))]
        assert _mask_keys([line.translate(_PREMASK) for line in lines]) == [mask_line(line) for line in lines]


def test_looping_printer_with_changing_numbers_and_hex_ids_never_produces_a_new_line():
    det = RepeatDetector(now=0.0)
    rng = random.Random(1)
    assert det.feed(b"retry 1 failed: 429 (request 0a1b2c3d4e5f)\n", 1.0)
    assert det.last_new_at == 1.0
    for i in range(2, 400):
        line = b"retry %d failed: %d (request %s)\n" % (i, rng.choice([429, 503]), os.urandom(6).hex().encode())
        det.feed(line, float(i))
    # one more distinct line shape was seen (503 masks like 429), so nothing after t=1 was new
    assert det.last_new_at == 1.0
    assert det.last_line_at == 399.0


def test_progressing_printer_produces_new_lines():
    det = RepeatDetector(now=0.0)
    for i, word in enumerate([b"fetching", b"parsing", b"rendering", b"uploading", b"done"], start=1):
        assert det.feed(b"step %d: %s page\n" % (i, word), float(i)), word
        assert det.last_new_at == float(i)


def test_a_line_that_left_the_window_comes_back_as_new():
    det = RepeatDetector(window_lines=3)
    assert feed_lines(det, [b"a", b"b", b"c"], 1.0)
    assert not det.feed(b"a\n", 2.0)               # still among the last 3
    assert feed_lines(det, [b"d", b"e", b"f"], 3.0)  # pushes a, b, c out
    assert det.feed(b"a\n", 4.0)
    assert det.last_new_at == 4.0


def test_a_big_chunk_replaces_the_window():
    det = RepeatDetector(window_lines=10)
    feed_lines(det, [b"old line"], 1.0)
    feed_lines(det, [b"fill %d" % i for i in range(50)], 2.0)
    assert det.feed(b"old line\n", 3.0)


def test_carriage_returns_end_lines_and_crlf_counts_once():
    det = RepeatDetector(window_lines=2)
    assert det.feed(b"progress 10%\rprogress 20%\r", 1.0)
    assert not det.feed(b"progress 30%\rprogress 40%\r", 2.0)
    assert det.feed(b"finished\r\n", 3.0)
    # CRLF made no empty line: the window of 2 still holds "progress 0%" and "finished"
    assert not det.feed(b"progress 99%\r\n", 4.0)
    assert det.lines == 6


def test_a_line_split_across_chunks_is_one_line():
    det = RepeatDetector()
    assert det.feed(b"hello wor", 1.0) is False      # not a line yet
    assert det.last_line_at is None
    assert det.feed(b"ld 1\nhello wo", 2.0)
    assert det.last_new_at == 2.0
    assert not det.feed(b"rld 2\n", 3.0)             # "hello world 0" again
    assert det.feed(b"hello\n", 4.0)                  # a prefix of the earlier line is another line
    assert det.lines == 3


def test_chunks_of_every_size_give_the_same_answer():
    lines = [b"step %d %s" % (i, [b"alpha", b"beta", b"gamma"][i % 3]) for i in range(60)] + [b"omega 1"]
    data = b"".join(line + b"\n" for line in lines)
    for size in (1, 3, 7, 64, len(data)):
        det = RepeatDetector(window_lines=5)
        news = []
        for i in range(0, len(data), size):
            if det.feed(data[i:i + size], float(i)):
                news.append(i)
        # alpha, beta, gamma are new once (a line counts when it ends); afterwards only "omega" is
        first_three_end = len(b"step 0 alpha\nstep 1 beta\nstep 2 gamma\n")
        last_chunk = float(((len(data) - 1) // size) * size)
        assert det.last_new_at == last_chunk, size
        assert all(i < first_three_end for i in news[:-1]) and news[-1] == last_chunk, (size, news)


def test_one_repeated_line_in_a_big_chunk_and_the_benchmark_text():
    body = b"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut"
    block = b"".join(b"%08d %s\n" % (i, body[:90]) for i in range(5000))
    det = RepeatDetector()
    assert det.feed(block[:300_000], 1.0)
    assert not det.feed(block[300_000:], 2.0)
    assert det.last_new_at == 1.0
    assert det.feed(b"something else\n", 3.0)


def test_empty_lines_are_ignored():
    det = RepeatDetector()
    assert not det.feed(b"\n\n\r\n", 1.0)
    assert det.last_line_at is None and det.lines == 0


def test_flush_counts_the_unterminated_last_line():
    det = RepeatDetector()
    det.feed(b"no newline at the end", 1.0)
    assert det.flush(2.0)
    assert det.last_new_at == 2.0
    assert not det.flush(3.0)


def test_long_lines_are_bounded_and_still_compared():
    det = RepeatDetector(window_lines=5)
    long_a = b"x" * (KEY_PREFIX_BYTES + 500) + b"tail-a"
    long_b = b"x" * (KEY_PREFIX_BYTES + 500) + b"tail-b"
    assert det.feed(long_a + b"\n", 1.0)
    assert not det.feed(long_a + b"\n", 2.0)
    assert det.feed(long_b + b"\n", 3.0)          # differs only after the prefix: the CRC tells
    # the same long line delivered in pieces is the same line
    assert not det.feed(long_b[:100], 4.0)
    assert not det.feed(long_b[100:] + b"\n", 5.0)
    assert all(len(k) <= KEY_PREFIX_BYTES + 40 for k in det._keys)


def test_an_endless_line_is_cut_and_memory_stays_bounded():
    det = RepeatDetector(window_lines=1000)
    piece = os.urandom(LINE_MAX_BYTES // 4)
    for i in range(64):
        det.feed(piece.replace(b"\n", b"-").replace(b"\r", b"-"), float(i))
    assert det.lines == 16                         # cut every 64 KiB
    assert det._partial.length < LINE_MAX_BYTES
    assert sum(map(len, det._keys)) < 1000 * (KEY_PREFIX_BYTES + 40)


def test_memory_stays_bounded_with_varied_long_lines():
    det = RepeatDetector()
    for i in range(30):
        chunk = b"".join(os.urandom(3000).hex().encode() + b"\n" for _ in range(40))
        det.feed(chunk, float(i))
    keys_bytes = sum(map(len, det._keys))
    cache_bytes = sum(map(len, det._mask_of.values())) + sum(map(len, det._mask_of))
    assert keys_bytes < 2 * 1024 * 1024 and cache_bytes < 6 * 1024 * 1024


def test_window_of_at_least_one_line():
    with pytest.raises(ValueError):
        RepeatDetector(window_lines=0)


def test_line_by_line_feeding_matches_the_reference_definition():
    """Fed one line at a time, the detector is exact: new iff unlike each of the previous N masked lines."""
    from collections import deque
    rng = random.Random(11)
    shapes = [b"retry %d of 5", b"id %s done", b"step %d", b"fetch page", b"cafe %d", b"ok"]
    for window in (1, 3, 8):
        det, ref = RepeatDetector(window_lines=window), deque(maxlen=window)
        for t in range(600):
            shape = rng.choice(shapes)
            arg = os.urandom(rng.choice([2, 5])).hex().encode() if b"%s" in shape else rng.randint(0, 10**rng.randint(1, 4))
            line = shape % arg if b"%" in shape else shape
            expect_new = mask_line(line) not in ref
            ref.append(mask_line(line))
            assert det.feed(line + b"\n", float(t)) == expect_new, (window, t, line)


def test_big_chunks_needing_exact_masks_for_many_lines():
    """Many keys the window lacks whose coarse forms it has: the whole chunk is masked in one pass."""
    def loop(n, odd=None):
        lines = [b"retry %d failed: 429 id=%s" % (i * 7919, os.urandom(4 + i % 5).hex().encode()) for i in range(n)]
        if odd is not None:
            lines[odd] = b"retry 5 failed: 429 id=abc"  # same coarse form, another mask (a short hex word stays)
        return b"".join(line + b"\n" for line in lines)

    det = RepeatDetector(window_lines=1000)
    assert det.feed(b"retry 1 failed: 429 id=0011223344556677\n", 1.0)
    assert not det.feed(loop(500), 2.0)
    assert not det.feed(loop(1500), 3.0)   # also when the chunk replaces the whole window
    assert not det.feed(loop(300), 4.0)
    assert det.feed(loop(400, odd=250), 5.0)
    assert not det.feed(loop(200), 6.0)
    assert det.last_new_at == 5.0


def test_uniform_chunks_of_changing_lines_and_lengths():
    # the buffer kept for the one-line-repeated check must follow its line and grow with the chunk: the
    # answers are those of a detector fed the same lines one at a time
    det, by_line = RepeatDetector(window_lines=300), RepeatDetector(window_lines=300)
    for turn, n in enumerate([50, 400, 30, 2000, 2000, 1999, 7]):
        line = b"pass %d of %s" % (turn, [b"alpha", b"beta", b"gamma"][turn % 3])
        chunk = b"\n" + b"".join(line + b"\n" for _ in range(n))
        new = det.feed(chunk, float(turn))
        assert det.uniform_line == line.translate(_PREMASK)
        one_by_one = [by_line.feed(piece, float(turn)) for piece in [b"\n"] + [line + b"\n"] * n]
        assert new == any(one_by_one), turn
        assert det.last_new_at == by_line.last_new_at
    assert det.feed(b"\n".join([b"pass 1 of beta"] * 3) + b"\n", 9.0)  # beta left the window


def _distinct(n, tag=b"w"):
    """n lines that differ once masked: each spells its number in letters that are not hex digits."""
    def word(i):
        letters = b""
        while True:
            i, r = divmod(i, 20)
            letters += b"ghijklmnopqrstuvwxyz"[r:r + 1]
            if not i:
                return letters
    return [b"%s line %s says %s" % (tag, word(i), b"xyz" * (i % 7)) for i in range(n)]


def test_a_big_new_chunk_leaves_its_last_lines_as_the_window():
    # more lines than the window, new from the first line: only the last `window` lines are kept
    lines = _distinct(1500)
    det = RepeatDetector(window_lines=1000)
    assert det.feed(b"start\n", 0.0)
    assert det.feed(b"".join(line + b"\n" for line in lines), 1.0)
    assert det.feed(lines[100] + b"\n", 2.0)               # left the window
    assert not det.feed(lines[-1] + b"\n", 3.0)            # in it
    assert not det.feed(lines[600] + b"\n", 4.0)           # the 1,000th line from the chunk's end
    assert det.last_new_at == 2.0
    assert det.feed(lines[499] + b"\n", 5.0)               # the 1,001st


def test_a_big_chunk_of_lines_masked_like_the_window_is_not_new():
    # right after a big chunk replaced the window, its coarse forms are not built: a first line whose key
    # differs (another number width, another hex id) but whose mask is in the window is still a repeat
    def loop(n, width, start):
        return b"".join(b"retry %0*d failed id=%s\n" % (width, start + i, os.urandom(5).hex().encode())
                        for i in range(n))
    det = RepeatDetector(window_lines=1000)
    assert det.feed(b"begin\n", 0.0)
    assert det.feed(b"".join(b"%s\n" % line for line in _distinct(1200)) + loop(1200, 3, 100), 1.0)
    assert not det.feed(loop(1500, 6, 100000), 2.0)
    assert not det.feed(loop(1500, 2, 10), 3.0)
    assert det.last_new_at == 1.0
    assert det.feed(b"retry 7 failed id=xyz\n", 4.0)      # another text: new


def test_varied_lines_fed_one_by_one_build_the_coarse_forms_once():
    # after a big chunk, the quick look serves a few lines; a stream of single new lines then gets the
    # window's coarse forms built and kept up to date, not the window joined for every line
    det = RepeatDetector(window_lines=1000)
    det.feed(b"".join(line + b"\n" for line in _distinct(1500)), 1.0)
    for i, line in enumerate(_distinct(50, tag=b"q")):
        assert det.feed(line + b"\n", 2.0 + i)
    assert det._coarse is not None and det._quick_looks == 0


class _OrdinaryOnly(RepeatDetector):
    """The detector with its shortcuts off: every chunk split line by line, every key checked in full."""

    def _new_at_head(self, data, start, end, now):
        return False

    def _repeated(self, unit, times):
        return b"\0"  # never the body: the one-line-repeated check always fails

    def _proven_new(self, key):
        return self._coarse_new([key])


@pytest.mark.parametrize("seed", range(4))
def test_the_shortcuts_give_the_answers_of_the_ordinary_path(seed):
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"cafe", b"deadbeef", b"x", b"retry", b"failed", b"ok"]

    def line():
        k = rng.random()
        if k < 0.3:
            return b"retry %d failed id=%s" % (rng.randint(0, 10 ** rng.randint(1, 6)),
                                                os.urandom(rng.choice([2, 4, 5])).hex().encode())
        if k < 0.5:
            return b" ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        if k < 0.55:
            return b""
        if k < 0.57:
            return b"L" * rng.randint(900, 1500)
        return b"item %d %s" % (rng.randint(0, 50), rng.choice(words))

    for _ in range(40):
        window = rng.choice([5, 50, 200])
        fast, plain = RepeatDetector(window_lines=window), _OrdinaryOnly(window_lines=window)
        data = b"".join(line() + rng.choice([b"\n", b"\n", b"\r", b"\r\n"]) for _ in range(rng.randint(10, 3000)))
        if rng.random() < 0.3:
            data += (b"loop %d\n" % rng.randint(0, 9)) * rng.randint(100, 3000)
        pos, now = 0, 0.0
        while pos < len(data):
            chunk = data[pos:pos + rng.choice([1, 7, 100, 5000, 60000, 262144])]
            pos, now = pos + len(chunk), now + 1
            assert fast.feed(chunk, now) == plain.feed(chunk, now), (seed, pos, window)
            assert (fast.last_new_at, fast.last_line_at) == (plain.last_new_at, plain.last_line_at)
            assert list(fast._keys) == list(plain._keys)
        assert fast.flush(now + 1) == plain.flush(now + 1)
