"""The job's output log: the keeper's writer and the supervisor's follower (passthrough.py passes it on).

Layout: `output.log` holds the command's bytes exactly as produced (stdout and stderr interleaved in
arrival order), so `tail -f` and `hbwrap logs` read it as it is. `output.idx` says which stream each
byte belongs to, as text lines written *before* the bytes they describe:

    G <n>        first line: the generation of this log (incremented by every rotation)
    O <offset>   from this byte offset on, the bytes are stdout
    E <offset>   ... stderr
    L <offset> <bytes> <unsent>
                 a gap: <bytes> of output belong before the byte at <offset> but are not in the log (the
                 disk was full); <unsent> of them did not reach the supervisor either (channel.py)
    R <offset>   the log was rotated when it was this long: continue in generation n+1

A full disk (ENOSPC, EDQUOT, EROFS, any failed write) never stops the writer: output the log cannot take
is handed back to the keeper (which sends it to its supervisor) and counted as the current gap; at the
next write that the disk takes again, the gap's `L` line goes first. Index lines are written whole or
not at all (a torn line is cut off again), and readers only act on whole lines, so the index stays
readable whatever the disk does.
"""
from __future__ import annotations

import errno
import os
import time

from hbwrap.jobfiles import open_job_file

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: the keeper imports this module, and pathlib is 2 MB
    from pathlib import Path

READ_CHUNK = 256 * 1024
STDOUT, STDERR = "O", "E"
FALLOC_FL_KEEP_SIZE = 1
PROBE_SIZE = 4096              # reserved to learn whether the log takes output again
RETRY_MIN_S, RETRY_MAX_S = 0.25, 30.0  # ... or, where nothing can be reserved, how often a write is tried
GAP = "L"  # the stream of a Gap piece from LogFollower.read(gaps=True)


class Gap(tuple):
    """A hole in the log: `size` bytes of output missing here, `unsent` of them the keeper could not hand to
    its supervisor either. (A tuple, not a typing.NamedTuple: the keeper imports this module.)"""

    __slots__ = ()

    def __new__(cls, size: int, unsent: int):
        return tuple.__new__(cls, (size, unsent))

    size = property(lambda self: self[0])
    unsent = property(lambda self: self[1])

    def __repr__(self) -> str:
        return f"Gap(size={self[0]}, unsent={self[1]})"


def _rotated(path) -> str:
    return os.fspath(path) + ".1"


def _open_append(path: Path, readable: bool = False) -> int:
    """For appending; `readable` for the index, whose last line is read back (a torn one is cut off)."""
    return open_job_file(path, (os.O_RDWR if readable else os.O_WRONLY) | os.O_APPEND | os.O_CREAT)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_fallocate = None


def _reserve(fd: int, offset: int, length: int) -> bool | None:
    """fallocate(KEEP_SIZE): True if the disk reserved these bytes, False if it refused, None if it cannot say."""
    global _fallocate
    try:
        import ctypes

        if _fallocate is None:
            _fallocate = ctypes.CDLL(None, use_errno=True).fallocate
            _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            _fallocate.restype = ctypes.c_int
        if _fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) == 0:
            return True
        err = ctypes.get_errno()
    except (ImportError, OSError, AttributeError):
        return None
    return None if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL) else False


def read_generation(idx_path: Path) -> int | None:
    try:
        with os.fdopen(open_job_file(idx_path, os.O_RDONLY), "rb") as f:
            first = f.readline()
    except FileNotFoundError:
        return None
    if first.startswith(b"G ") and first.endswith(b"\n"):
        try:
            return int(first[2:])
        except ValueError:
            return None
    return None


class LogWriter:
    """The keeper's side: append output, note stream switches and gaps first, rotate beyond `max_size`.

    `write` never raises for a failing disk: it returns how many bytes at the end of the data the log
    could not take (they belong at `position`, in the current gap). `error` is the failure of the current
    episode (None once the log takes output again); `failure` hands each new episode's error out once.
    """

    # while the reader lags, rotation (which deletes the older log) waits, until the log is this big
    LAG_FACTOR, LAG_EXTRA = 4, 16 * 1024 * 1024

    def __init__(self, log_path: Path, idx_path: Path, max_size: int, may_rotate=None, clock=time.monotonic):
        self.log_path, self.idx_path, self.max_size = log_path, idx_path, max_size
        self.clock = clock
        self.may_rotate = may_rotate  # callable(generation) -> bool: has the reader moved on far enough?
        self.generation = read_generation(idx_path)
        self.idx_fd: int | None = None
        self.log_fd: int | None = None
        self.idx_size = 0          # the index up to its last whole line
        self.torn = False          # a line was written in part: cut the index back to idx_size first
        self.size = 0
        self.stream: str | None = None
        self.gap = 0               # bytes of the current gap (at `position`), its L line not yet written
        self.gap_unsent = 0
        self.missing = 0           # bytes of output not in the log, all gaps together
        self.rotating = 0          # steps of an interrupted rotation still to do (see _rotation_steps)
        self.error: OSError | None = None
        self.failure: OSError | None = None
        self.retry_s = RETRY_MIN_S
        self.retry_at = 0.0
        if not self._reopen():
            try:
                self.size = os.lstat(log_path).st_size
            except OSError:
                self.size = 0
        if self.generation is None:
            self.generation = 0

    @property
    def position(self) -> tuple[int, int]:
        """(generation, offset) the next byte of output belongs at: the place of the current gap."""
        return self.generation, self.size

    # --- files ---------------------------------------------------------------------------------------
    def _failed(self, exc: OSError) -> None:
        if self.error is None:
            self.error = self.failure = exc

    def _reopen(self) -> bool:
        """Open what is not open yet, and start a new index with its G line; False if the disk refused."""
        try:
            if self.idx_fd is None:
                self.idx_fd = _open_append(self.idx_path, readable=True)
                self.idx_size = os.fstat(self.idx_fd).st_size
                if self.idx_size:
                    self._cut_torn_tail()
            if self.log_fd is None:
                self.log_fd = _open_append(self.log_path)
                self.size = os.fstat(self.log_fd).st_size
        except OSError as exc:
            self._failed(exc)
            return False
        if self.idx_size == 0:
            if self.generation is None:
                self.generation = 0
            if not self._line(b"G %d\n" % self.generation):
                return False
        return True

    def _cut_torn_tail(self) -> None:
        """An index left with half a line at its end (a keeper killed mid-write): continue after its last whole line."""
        tail = os.pread(self.idx_fd, min(self.idx_size, 4096), max(0, self.idx_size - 4096))
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        self.idx_size -= len(tail) - (cut + 1)
        self.torn = True

    def _line(self, line: bytes) -> bool:
        """Append one index line, whole or not at all; False if the disk refused it."""
        if self.torn:
            try:
                os.ftruncate(self.idx_fd, self.idx_size)
            except OSError as exc:
                self._failed(exc)
                return False
            self.torn = False
        view, done = memoryview(line), 0
        try:
            while done < len(line):
                done += os.write(self.idx_fd, view[done:])
        except OSError as exc:
            self._failed(exc)
            if done:
                self.torn = True  # readers ignore it meanwhile: they read whole lines only
            return False
        self.idx_size += done
        return True

    def _room(self) -> bool:
        """In a gap: whether the log takes output again, learnt without writing any (a gap line written only to
        start the next gap at once would fill the index with them): space reserved beyond the log's end, or
        where the file system cannot reserve, a write tried at most every `retry_s` (doubling to RETRY_MAX_S)."""
        # (a file size limit, EFBIG, does not stop a reservation: only a write can tell)
        if self.log_fd is not None and not (self.error is not None and self.error.errno == errno.EFBIG):
            reserved = _reserve(self.log_fd, self.size, PROBE_SIZE)
            if reserved is not None:
                return reserved
        now = self.clock()
        if now < self.retry_at:
            return False
        self.retry_at, self.retry_s = now + self.retry_s, min(RETRY_MAX_S, self.retry_s * 2)
        return True

    def settle(self) -> bool:
        """Whether the log takes output again: files open, rotation done, the last gap recorded."""
        if self.gap and not self._room():
            return False
        if self.rotating and not self._rotate_on():
            return False
        if (self.idx_fd is None or self.log_fd is None or self.idx_size == 0) and not self._reopen():
            return False
        if self.gap:
            if not self._line(b"L %d %d %d\n" % (self.size, self.gap, self.gap_unsent)):
                return False
            self.gap = self.gap_unsent = 0
            self.stream = None  # the next output names its stream again
        self.error = None
        self.retry_s = RETRY_MIN_S
        return True

    # --- output --------------------------------------------------------------------------------------
    def write(self, stream: str, data: bytes) -> int:
        """Append `data`; the number of bytes at its end the log could not take (0 when it took them all)."""
        if not self.settle():
            return self._lose(len(data))
        if self.size and self.size + len(data) > self.max_size and (
                self.may_rotate is None or self.size >= self.max_size * self.LAG_FACTOR + self.LAG_EXTRA
                or self.may_rotate(self.generation)):
            self.rotate()
            if not self.settle():
                return self._lose(len(data))
        if stream != self.stream:
            if not self._line(b"%s %d\n" % (stream.encode(), self.size)):
                return self._lose(len(data))
            self.stream = stream
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(self.log_fd, view[done:])
        except OSError as exc:
            self._failed(exc)
        self.size += done
        return self._lose(len(data) - done)

    def _lose(self, n: int) -> int:
        self.gap += n
        self.missing += n
        return n

    def unsent(self, n: int) -> None:
        """`n` bytes of the current gap could not be handed to the supervisor either."""
        self.gap_unsent += n

    # --- rotation ------------------------------------------------------------------------------------
    def rotate(self) -> None:
        if not self._line(b"R %d\n" % self.size):
            return  # not now: the next write tries again
        self._close_files()
        self.generation += 1
        self.size, self.idx_size, self.stream = 0, 0, None
        self.rotating = 1
        self._rotate_on()

    def _rotate_on(self) -> bool:
        """The rest of a rotation (its R line is written), from the step an earlier try stopped at."""
        # Order matters to a reader: both old files go first (renaming over an existing file would also make
        # ext4 flush the data first: slow), so that any index/log pair a reader finds at one pair of paths is
        # always of one generation.
        steps = [(os.unlink, _rotated(p), None) for p in (self.idx_path, self.log_path)]
        steps += [(os.replace, p, _rotated(p)) for p in (self.idx_path, self.log_path)]
        while self.rotating <= len(steps):
            op, path, target = steps[self.rotating - 1]
            try:
                op(path) if target is None else op(path, target)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._failed(exc)
                return False
            self.rotating += 1
        self.rotating = 0
        return self._reopen()

    def _close_files(self) -> None:
        for fd in (self.log_fd, self.idx_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.log_fd = self.idx_fd = None

    def close(self) -> None:
        """Record the last gap if the disk takes it now (else `gap` says what the index misses), and close."""
        self.settle()
        self._close_files()


def log_position(log_path: Path, idx_path: Path) -> tuple[int, int]:
    """(generation, size) of the log now: where a follower starts to see only new output."""
    for _ in range(5):
        gen = read_generation(idx_path)
        try:
            size = os.lstat(log_path).st_size
        except FileNotFoundError:
            size = 0
        if read_generation(idx_path) == gen:
            return (gen if gen is not None else 0), size
    return (gen if gen is not None else 0), size


def index_size(idx_path: Path) -> int:
    """How long the index is now: gaps recorded up to here are history to a follower starting now."""
    try:
        return os.lstat(idx_path).st_size
    except OSError:
        return 0


class LogFollower:
    """The supervisor's side: read new bytes of the log with their stream, across rotations.

    With `gaps`, a gap in the log (an `L` line) comes out of `read` as a (GAP, Gap) piece at its place,
    and `read` stops there, so that the caller can put in what belongs there before reading on; the
    gaps recorded in the first `history` bytes of the index of generation `generation` are not reported
    (they were there before this reader started: another run's).
    """

    def __init__(self, log_path: Path, idx_path: Path, generation: int, offset: int, gaps: bool = False,
                 history: int = 0):
        self.log_path, self.idx_path = log_path, idx_path
        self.generation, self.offset = generation, offset
        self.log_fd: int | None = None
        self.idx_fd: int | None = None
        self.gaps = gaps
        self._history = (generation, history)
        self._gaps: list[tuple[int, Gap]] = []      # (offset, gap) not yet passed
        self._switches: list[tuple[int, str]] = []  # (offset, stream) not yet passed
        self._rotated_at: int | None = None
        self._last_idx_ino: int | None = None
        self._finished: tuple[int, int] | None = None
        self.stream = STDOUT
        self.skipped_generations = 0

    def _open_pair(self, idx_path: Path, log_path: Path) -> tuple[int, int, int] | None:
        """(generation, idx fd, log fd) of a consistent index/log pair at these paths, or None."""
        try:
            idx_fd = open_job_file(idx_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            log_fd = open_job_file(log_path, os.O_RDONLY)
        except FileNotFoundError:
            os.close(idx_fd)
            return None
        except BaseException:
            os.close(idx_fd)
            raise
        try:  # both still at their paths: no rotation renamed one of them in between
            same = (os.fstat(idx_fd).st_ino == os.lstat(idx_path).st_ino
                    and os.fstat(log_fd).st_ino == os.lstat(log_path).st_ino)
        except FileNotFoundError:
            same = False
        head = os.pread(idx_fd, 64, 0)
        if not same or not head.startswith(b"G ") or b"\n" not in head:
            os.close(idx_fd)
            os.close(log_fd)
            return None
        return int(head[2:head.index(b"\n")]), idx_fd, log_fd

    def _try_open(self) -> bool:
        """Open the expected generation: the current log, or the rotated one if the keeper rotated past it."""
        rotated = (_rotated(self.idx_path), _rotated(self.log_path))
        current = self._open_pair(self.idx_path, self.log_path)
        if current is not None and current[0] > self.generation:
            # the keeper rotated past the generation we want: it is the rotated log, unless that is gone too
            older = self._open_pair(*rotated)
            if older is None:  # mid-rotation (or gone): look again at the next change
                os.close(current[1])
                os.close(current[2])
                return False
            if older[0] >= self.generation:
                os.close(current[1])
                os.close(current[2])
                current = older
            else:
                os.close(older[1])
                os.close(older[2])
        if current is None:
            return False
        gen, idx_fd, log_fd = current
        if gen < self.generation and os.fstat(idx_fd).st_ino == self._last_idx_ino:
            # the log we just finished, not yet renamed away by the keeper's rotation: wait for the new one
            os.close(idx_fd)
            os.close(log_fd)
            return False
        if gen != self.generation:
            if gen < self.generation:  # an older log than we expect: a foreign or reset state dir
                self.generation = gen
            else:  # the reader fell more than a whole log behind: those bytes are gone
                self.skipped_generations += gen - self.generation
                self.generation = gen
            self.offset = 0
        self.idx_fd, self.log_fd = idx_fd, log_fd
        self._last_idx_ino = os.fstat(idx_fd).st_ino
        self._switches, self._gaps, self._rotated_at = [], [], None
        self._idx_pos = 0
        self.stream = STDOUT
        return True

    def close(self) -> None:
        for fd in (self.log_fd, self.idx_fd):
            if fd is not None:
                os.close(fd)
        self.log_fd = self.idx_fd = None

    def _read_index(self) -> None:
        """The index's whole lines not read yet; a line still being written is read again next time."""
        while True:
            data = os.pread(self.idx_fd, 65536, self._idx_pos)
            end = data.rfind(b"\n")
            if end < 0:
                return
            pos = self._idx_pos
            for line in data[:end + 1].splitlines(keepends=True):
                pos += len(line)
                self._index_line(line[:-1], pos)
            self._idx_pos += end + 1

    def _index_line(self, line: bytes, line_end: int) -> None:
        kind, _, rest = line.partition(b" ")
        try:
            nums = [int(n) for n in rest.split()]
        except ValueError:
            return
        if not nums:
            return
        if kind == b"R":
            self._rotated_at = nums[0]
        elif kind in (b"O", b"E"):
            self._switches.append((nums[0], kind.decode()))
        elif kind == b"L" and self.gaps and len(nums) >= 2:
            if self.generation == self._history[0] and line_end <= self._history[1]:
                return  # recorded before this reader started
            self._gaps.append((nums[0], Gap(nums[1], nums[2] if len(nums) > 2 else 0)))

    def _next_gap(self) -> tuple[int, Gap] | None:
        while self._gaps and self._gaps[0][0] < self.offset:
            self._gaps.pop(0)  # behind where this reader started
        return self._gaps[0] if self._gaps else None

    def read(self, limit: int = READ_CHUNK, stop_at: tuple[int, int] | None = None) -> list[tuple[str, bytes]]:
        """Up to about `limit` new bytes as (stream, data) pieces; [] when nothing new is there yet.

        With `stop_at` (another reader's `position`), nothing at or beyond that position is read. With
        `gaps`, a (GAP, Gap) piece ends the list where the log has a gap.
        """
        pieces: list = []
        budget = limit
        while budget > 0:
            want = budget
            if stop_at is not None:
                if self.caught_up(stop_at):
                    break
                if self.generation == stop_at[0]:
                    want = min(budget, stop_at[1] - self.offset)
            if self.log_fd is None and not self._try_open():
                break
            data = os.pread(self.log_fd, want, self.offset)
            self._read_index()  # after the data: every switch and gap before its end is already written
            gap = self._next_gap() if self.gaps else None
            if gap is not None and gap[0] < self.offset + len(data):
                data = data[:gap[0] - self.offset]
            if data:
                start, end = self.offset, self.offset + len(data)
                pos = start
                while pos < end:
                    while self._switches and self._switches[0][0] <= pos:
                        self.stream = self._switches.pop(0)[1]
                    stop = min(end, self._switches[0][0]) if self._switches else end
                    pieces.append((self.stream, data[pos - start:stop - start]))
                    pos = stop
                self.offset = end
                budget -= len(data)
            if gap is not None and gap[0] == self.offset:
                self._gaps.pop(0)
                pieces.append((GAP, gap[1]))
                break
            if data:
                continue
            if self._rotated_at is not None and self.offset >= self._rotated_at:
                self._finished = (self.generation, self.offset)
                self.close()
                self.generation += 1
                self.offset = 0
                continue
            break
        return pieces

    @property
    def here(self) -> tuple[int, int]:
        """(generation, offset) of the next byte this reader reads (after a rotation: the next generation's 0)."""
        return self.generation, self.offset

    def caught_up(self, position: tuple[int, int]) -> bool:
        """Whether this reader has read everything before `position` (another reader's `position`)."""
        return (self.generation, self.offset) >= tuple(position)

    @property
    def held_generation(self) -> int:
        """The oldest generation this reader still needs on disk, minus one unless it holds it open.

        The keeper may delete generation D (by rotating) only while this is >= D.
        """
        if self.log_fd is not None:
            return self.generation
        return self.generation - 1

    @property
    def position(self) -> tuple[int, int]:
        """(generation, offset) read so far. Between finishing one generation and opening the next, it is
        the end of the finished one: the keeper must not delete the next before we hold it open."""
        if self.log_fd is None and self._finished is not None:
            return self._finished
        return self.generation, self.offset


def tail_bytes(path: Path, n_lines: int | None) -> bytes:
    """The last `n_lines` lines of a file (all of it when None), reading backwards in blocks."""
    try:
        with os.fdopen(open_job_file(path, os.O_RDONLY), "rb") as f:
            if n_lines is None:
                return f.read()
            f.seek(0, os.SEEK_END)
            end = f.tell()
            pos, buf = end, b""
            want = n_lines + 1
            while pos > 0 and buf.count(b"\n") < want:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                buf = f.read(step) + buf
            lines = buf.split(b"\n")
            trailing = buf.endswith(b"\n")
            if trailing:
                lines = lines[:-1]
            out = b"\n".join(lines[-n_lines:]) if n_lines else b""
            return out + (b"\n" if trailing and out else b"")
    except FileNotFoundError:
        return b""
