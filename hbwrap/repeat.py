"""Repetition detection for `--repeat-timeout`: when did the output last hold a line it had not just shown?

A line is *new* unless it equals one of the previous `window_lines` lines once every run of digits and
every run of 8 or more hex characters is masked (both become `0`): `retry 17 failed: 429 id=3fa85f64`
and `retry 18 failed: 503 id=9bc12d0e` are the same line. Lines end at `\\n` or `\\r` (so progress bars
and CRLF count once); empty lines are neither new nor counted.

The detector sees every byte of output, so it works on whole chunks with C-level operations
(`bytes.translate`, `split`, comparisons, set and Counter construction) and runs no Python code per
line on large chunks (small ones update the window line by line, which is cheap at their rate):

* digits are first translated to `0` over the whole chunk (the *key* of a line). Equal keys mean equal
  masked lines, so output that repeats with numbers of the same width (the usual loop, and the
  benchmark's numbered lines) is recognised by key alone; a chunk that is one line repeated costs a
  `translate` and a comparison.
* a key not in the window is first compared by its *coarse* form (every hex-class byte deleted): lines
  with equal masks always have equal coarse forms, so a coarse form the window lacks proves a new line.
  That settles ordinary progressing output (new words) cheaply.
* only when the coarse form matches is the exact mask computed (numbers of another width, hex ids),
  for many lines in one pass over the chunk.

A chunk that is one line over and over (a loop) is recognised by one comparison with a kept buffer of
that line repeated; `uniform_line` then tells the marker scan that every line there is that line with
its digits masked, so the scan looks at that line once instead of at each of its thousands of copies.

A chunk of more lines than the window whose first lines are new (output that progresses, in bulk) is
settled without splitting it all: the answer is already "new", and the window afterwards is the
chunk's last `window_lines` lines, the only ones split. Right after such a chunk the window's coarse
forms are not built at once: a new first line is usually proved new by a text its mask keeps being
absent from the window (see `_proven_new`).

Approximations, all bounded: within one chunk a line is compared with the window and with the chunk's
other lines (not only the 1,000 before it); lines longer than 1 KiB are compared on their first KiB
plus a CRC and the length of the rest (digits in the rest count by position, not as runs); an
unterminated line is cut into a line every 64 KiB. Memory stays within a few MB whatever the output.
"""
from __future__ import annotations

import re
import time
import zlib
from collections import Counter, deque
from itertools import accumulate
from operator import add

KEY_PREFIX_BYTES = 1024        # longer lines are compared on this prefix + CRC and length of the rest
LINE_MAX_BYTES = 64 * 1024     # an unterminated line is cut into a line after this many bytes
_CACHE_FACTOR = 2              # mask cache entries kept, in windows
_BATCH_MASKS = 64              # more keys than this to mask: mask the whole chunk in one pass instead
_QUICK_LOOKS = 8               # after the window is replaced: lines proved new without its coarse forms

_PREMASK = bytes.maketrans(b"0123456789\r", b"0000000000\n")
_HEX_TO_ZERO = bytes.maketrans(b"abcdefABCDEF", b"000000000000")
_HEX_CLASS = b"0abcdefABCDEF"  # after _PREMASK every digit is 0
_HEX_RUN = re.compile(b"00000000(?:0*)")  # over _HEX_TO_ZERO output (spelt so that sre searches fastest)
_SPEC_MASK = re.compile(rb"[0-9A-Fa-f]{8,}|[0-9]+")


def premask(text: bytes) -> bytes:
    """Digits as `0` and `\r` as `\n`, byte for byte: what RepeatDetector.uniform_line is made of."""
    return text.translate(_PREMASK)


def mask_line(line: bytes) -> bytes:
    """The reference masking (one regex): runs of 8+ hex characters and runs of digits become `0`."""
    return _SPEC_MASK.sub(b"0", line)


def _long_key(prefix: bytes, rest_crc: int, total_len: int) -> bytes:
    # `\n` never occurs inside a line, so it separates the part that is masked from the part that is not
    return prefix + b"\n%08x:%d" % (rest_crc, total_len)


def _key(line: bytes) -> bytes:
    if len(line) <= KEY_PREFIX_BYTES:
        return line
    return _long_key(line[:KEY_PREFIX_BYTES], zlib.crc32(memoryview(line)[KEY_PREFIX_BYTES:]), len(line))


def _split_long(key: bytes) -> tuple[bytes, bytes]:
    head, sep, tail = key.partition(b"\n")
    return head, sep + tail


def _coarse_keys(keys: list[bytes]) -> list[bytes]:
    """Each key with every hex-class byte deleted (a long key's CRC part kept as it is)."""
    joined = b"\n".join(keys)
    if joined.count(b"\n") == len(keys) - 1:
        return joined.translate(None, _HEX_CLASS).split(b"\n")
    out = []
    for k in keys:
        head, tail = _split_long(k)
        out.append(head.translate(None, _HEX_CLASS) + tail)
    return out


def _collapse_zero_runs(data: bytes) -> bytes:
    while b"00" in data:
        data = data.replace(b"0000", b"0").replace(b"00", b"0")
    return data


def _mask_joined(joined: bytes) -> bytes:
    """Exact masks of `\n`-joined keys (digits already 0): hex runs of 8+ and digit runs become one `0`."""
    hexed = joined.translate(_HEX_TO_ZERO)
    if b"00000000" in hexed:
        # A maximal run of 8+ hex-class bytes is one mask, and no digit run touches it (its neighbours are
        # not hex-class). Keep the text between the runs: positions come from the run and gap lengths,
        # every step a C-level map, since with hex ids on every line this runs once per line.
        gaps = _HEX_RUN.split(hexed)
        runs = _HEX_RUN.findall(hexed)
        gap_lens = list(map(len, gaps))
        starts = [0, *accumulate(map(add, gap_lens, map(len, runs)))]
        joined = b"0".join(map(joined.__getitem__, map(slice, starts, map(add, starts, gap_lens))))
    return _collapse_zero_runs(joined)


def _mask_keys(keys: list[bytes]) -> list[bytes]:
    joined = b"\n".join(keys)
    if joined.count(b"\n") == len(keys) - 1:
        return _mask_joined(joined).split(b"\n")
    out = []
    for k in keys:
        head, tail = _split_long(k)
        out.append(_mask_joined(head) + tail)
    return out


def _shift(counts: dict[bytes, int], entering: list[bytes], leaving: list[bytes]) -> None:
    """Count `entering` items in and `leaving` ones out (plain dict operations: this runs per line)."""
    get = counts.get
    for item in entering:
        counts[item] = get(item, 0) + 1
    for item in leaving:
        left = counts[item] - 1
        if left:
            counts[item] = left
        else:
            del counts[item]


class _Partial:
    """The line still being written, bounded: its first KEY_PREFIX_BYTES, a CRC and the length of the rest."""

    def __init__(self):
        self.prefix = b""
        self.crc = 0
        self.length = 0

    def add(self, piece: bytes) -> list[bytes]:
        """Append bytes (no line end among them); returns the keys of lines cut at LINE_MAX_BYTES."""
        cut = []
        while piece:
            room = LINE_MAX_BYTES - self.length
            part, piece = piece[:room], piece[room:]
            take = max(0, KEY_PREFIX_BYTES - len(self.prefix))
            if take:
                self.prefix += part[:take]
            if len(part) > take:
                self.crc = zlib.crc32(memoryview(part)[take:], self.crc)
            self.length += len(part)
            if self.length >= LINE_MAX_BYTES:
                cut.append(self.finish())
        return cut

    def finish(self) -> bytes | None:
        """The key of the line ended now, None if it was empty."""
        if not self.length:
            return None
        key = self.prefix if self.length <= KEY_PREFIX_BYTES else _long_key(self.prefix, self.crc, self.length)
        self.prefix, self.crc, self.length = b"", 0, 0
        return key


class RepeatDetector:
    """Feed it the raw output; `last_new_at` is when a line last appeared that was not a repeat.

    `now` values come from the caller's clock (monotonic seconds); the detector never reads a clock.
    `last_line_at` is when any line last ended (None before the first): a stall by repetition needs
    output that repeats, so compare both (`last_line_at > last_new_at`) before calling silence a repeat.
    """

    def __init__(self, window_lines: int = 1000, *, now: float = 0.0):
        if window_lines < 1:
            raise ValueError("window_lines must be at least 1")
        self.window_lines = window_lines
        self.last_new_at = now
        self.last_line_at: float | None = None
        # non-empty lines seen, except that a big chunk settled by its first lines adds fewer: what matters
        # is that it grows whenever lines end
        self.lines = 0
        self._keys: deque[bytes] = deque()
        self._counts: dict[bytes, int] = {}          # key -> lines of the window with it
        self._coarse: dict[bytes, int] | None = None  # coarse form -> lines; None until needed
        self._masks: dict[bytes, int] | None = None   # exact mask -> lines; None until needed
        self._mask_of: dict[bytes, bytes] = {}        # key -> exact mask (cache)
        self._quick_looks = 0                         # _proven_new's looks left before coarse forms
        self._partial = _Partial()
        self._run_unit = b""  # _repeated's unit and buffer
        self._run = b""
        self.uniform_line: bytes | None = None

    # --- feeding -----------------------------------------------------------------------------------
    def feed(self, chunk: bytes, now: float) -> bool:
        """Take a chunk of output as it arrived; True if it completed at least one new line.

        Afterwards `uniform_line` is, when every line between the chunk's first and last line end is one
        line repeated, that line with digits masked (see `premask`), else None: a raw line there can
        contain a text only if this line contains the text premasked (the marker scan uses that).
        """
        self.uniform_line = None
        if not chunk:
            return False
        data = chunk.translate(_PREMASK)
        first = data.find(b"\n")
        if first < 0:
            return self._take(self._partial.add(data), now)
        keys = self._partial.add(data[:first])
        end = self._partial.finish()
        if end is not None:
            keys.append(end)
        new = self._take(keys, now)
        last = data.rfind(b"\n")
        if last > first:
            new = self._body(data, first + 1, last + 1, now) or new
        return self._take(self._partial.add(data[last + 1:]), now) or new

    def flush(self, now: float) -> bool:
        """The output ended: an unterminated last line counts as a line."""
        key = self._partial.finish()
        return self._take([key], now) if key is not None else False

    def _take(self, keys: list[bytes], now: float, body: bytes | None = None) -> bool:
        if not keys:
            return False
        new, masks = self._any_new(keys, body)
        self._push(keys, masks)
        self._note(len(keys), new, now)
        return new

    def _note(self, n_lines: int, new: bool, now: float) -> None:
        self.lines += n_lines
        self.last_line_at = now
        if new:
            self.last_new_at = now

    def _body(self, data: bytes, start: int, end: int, now: float) -> bool:
        """The whole lines of data[start:end], which ends with a line end."""
        line_end = data.find(b"\n", start)
        unit_end = line_end + 1
        while data.startswith(b"\n", unit_end):
            unit_end += 1
        repeats, rest = divmod(end - start, unit_end - start)
        if not rest and line_end - start <= LINE_MAX_BYTES and data.startswith(
                self._repeated(data[start:unit_end], repeats), start):  # memcmp speed
            # the chunk is one line over and over (the common loop, and the benchmark's numbered lines)
            if line_end == start:
                return False
            line = data[start:line_end]
            self.uniform_line = line
            key = _key(line)
            new = self._any_new([key])[0]
            self._push_repeated(key, repeats)
            self._note(repeats, new, now)
            return new
        if end - start > 2 * self.window_lines and self._counts:
            settled = self._new_at_head(data, start, end, now)
            if settled:
                return True
        body = data[start:end]
        lines = body.split(b"\n")
        lines.pop()
        lines = list(filter(None, lines))
        if not lines:
            return False
        if len(body) > KEY_PREFIX_BYTES and max(map(len, lines)) > KEY_PREFIX_BYTES:
            return self._take(self._long_lines(lines), now)
        return self._take(lines, now, body)

    def _new_at_head(self, data: bytes, start: int, end: int, now: float) -> bool:
        """A body of more lines than the window whose first lines are new: only its last `window_lines`
        lines are split, as they are all the window keeps (lines between are neither compared nor kept,
        and count as one in `lines`). False (nothing taken) for any other body."""
        head, pos = [], start
        while len(head) < 4 and pos < end:
            line_end = data.find(b"\n", pos, end)
            if line_end > pos:
                head.append(data[pos:line_end])
            pos = line_end + 1
        if not head or max(map(len, head)) > KEY_PREFIX_BYTES or not self._head_new(head):
            return False
        parts = data[pos:end].rsplit(b"\n", self.window_lines + 1)  # [before, the last lines..., b""]
        tail = list(filter(None, parts[1:-1]))
        if len(tail) < self.window_lines or max(map(len, tail)) > KEY_PREFIX_BYTES:
            return False  # empty or long lines among the last ones: the ordinary way
        self._rebuild(tail)
        self._note(len(head) + (1 if parts[0] else 0) + len(tail), True, now)
        return True

    def _repeated(self, unit: bytes, times: int) -> memoryview:
        """`unit * times` without building it for every chunk: one buffer, kept while the unit stays."""
        size = len(unit) * times
        if self._run_unit != unit or len(self._run) < size:
            self._run_unit, self._run = unit, unit * (times + times // 4 + 1)  # room for the next chunks
        return memoryview(self._run)[:size]

    @staticmethod
    def _long_lines(lines: list[bytes]) -> list[bytes]:
        keys = []
        for line in lines:
            if len(line) <= KEY_PREFIX_BYTES:
                keys.append(line)
                continue
            part = _Partial()
            keys.extend(part.add(line))
            end = part.finish()
            if end is not None:
                keys.append(end)
        return keys

    # --- deciding ----------------------------------------------------------------------------------
    def _any_new(self, keys: list[bytes], body: bytes | None = None) -> tuple[bool, list[bytes] | None]:
        """(does any key make a new line, the exact masks of all `keys` if they had to be computed)

        `body`, when given, is the text the keys were split from (same lines, in order, plus empty ones),
        so that many masks can be computed in one pass over it.
        """
        counts = self._counts
        if not counts:
            return True, None
        if self._head_new(keys):
            return True, None
        misses = list(set(keys).difference(counts))
        if not misses:
            return False, None
        if self._coarse_new(misses):
            return True, None
        window = self._mask_counts()
        if body is not None and len(misses) > _BATCH_MASKS:
            masks = list(filter(None, _mask_joined(body).split(b"\n")))  # non-empty lines stay non-empty
            return not window.keys() >= set(masks), masks
        return not window.keys() >= set(self._masks_for(misses)), None

    def _head_new(self, keys: list[bytes]) -> bool:
        """Whether the first lines prove the keys new (progressing output usually shows itself there)."""
        counts = self._counts
        for key in keys[:4]:
            if key not in counts:
                return self._proven_new(key)
        return False

    def _proven_new(self, key: bytes) -> bool:
        """Whether `key`, not in the window, is sure to be new (False: it may be a repeat).

        Right after the window was replaced by a big chunk's last lines, a text the line's mask keeps
        (its longest part between masked runs) is looked for in the window's keys joined: every line with
        the same mask holds that text, so where it is absent the line is new. That spares building the
        window's coarse forms for output that never repeats; after a few such looks (small chunks, where
        the coarse forms are kept up to date line by line) they are built once.
        """
        if self._coarse is None and self._quick_looks and len(key) <= KEY_PREFIX_BYTES:
            self._quick_looks -= 1
            text = max(_mask_joined(key).split(b"0"), key=len)
            if len(text) >= 4 and text not in b"\n".join(self._keys):
                return True
        return self._coarse_new([key])

    def _coarse_new(self, misses: list[bytes]) -> bool:
        """A coarse form the window lacks proves a new line (equal masks imply equal coarse forms)."""
        return not self._coarse_counts().keys() >= set(_coarse_keys(misses))

    def _coarse_counts(self) -> dict[bytes, int]:
        if self._coarse is None:
            self._coarse = dict(Counter(_coarse_keys(list(self._keys))))
        return self._coarse

    def _mask_counts(self) -> dict[bytes, int]:
        if self._masks is None:
            self._masks = dict(Counter(self._masks_for(list(self._keys))))
        return self._masks

    def _masks_for(self, keys: list[bytes]) -> list[bytes]:
        cache = self._mask_of
        missing = [k for k in keys if k not in cache]
        if missing:
            if len(cache) + len(missing) > _CACHE_FACTOR * self.window_lines:
                # keep what the window needs (the keys asked for now are cached again below)
                self._mask_of = cache = {k: cache[k] for k in self._counts if k in cache}
                missing = [k for k in dict.fromkeys(keys) if k not in cache]
            cache.update(zip(missing, _mask_keys(missing)))
        return [cache[k] for k in keys]

    # --- the window --------------------------------------------------------------------------------
    def _push(self, keys: list[bytes], masks: list[bytes] | None = None) -> None:
        if len(keys) >= self.window_lines:
            self._rebuild(keys[-self.window_lines:], masks[-self.window_lines:] if masks is not None else None)
            return
        overflow = len(self._keys) + len(keys) - self.window_lines
        leaving = [self._keys.popleft() for _ in range(overflow)] if overflow > 0 else []
        self._keys.extend(keys)
        _shift(self._counts, keys, leaving)
        # derived counters, once built, follow the window line by line (small chunks only: big ones rebuild)
        if self._coarse is not None:
            _shift(self._coarse, _coarse_keys(keys), _coarse_keys(leaving) if leaving else [])
        if self._masks is not None:
            entering = masks if masks is not None else self._masks_for(keys)
            _shift(self._masks, entering, self._masks_for(leaving) if leaving else [])

    def _push_repeated(self, key: bytes, times: int) -> None:
        if times >= self.window_lines:
            if self._counts.get(key) != self.window_lines:  # else the window is that line already
                self._rebuild([key] * self.window_lines)
        else:
            self._push([key] * times)

    def _rebuild(self, keys: list[bytes], masks: list[bytes] | None = None) -> None:
        self._quick_looks = _QUICK_LOOKS
        self._keys = deque(keys)
        self._counts = dict(Counter(keys))
        self._coarse = None
        self._masks = dict(Counter(masks)) if masks is not None else None


def bench_feed(text: bytes, total_bytes: int = 256 * 1024 * 1024, chunk_bytes: int = 256 * 1024) -> float:
    """MB per CPU second of `RepeatDetector.feed` over `text` repeated in chunks of `chunk_bytes`.

    CPU time, not wall time, so that other load on the machine does not show up as slowness.
    """
    chunks = [text[i:i + chunk_bytes] for i in range(0, len(text), chunk_bytes)] or [b""]
    detector = RepeatDetector()
    fed, now = 0, 0.0
    started = time.process_time()
    while fed < total_bytes:
        for chunk in chunks:
            detector.feed(chunk, now)
            fed += len(chunk)
            now += 0.001
    return fed / max(1e-9, time.process_time() - started) / 1e6
