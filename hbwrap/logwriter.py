"""The keeper's side of the output log (its layout: output.py): every byte the command writes, appended in
arrival order with its stream recorded in the index, rotated at --log-max-size, and a full disk turned into
a recorded gap instead of a stopped writer.
"""
from __future__ import annotations

import errno
import os
import time

from hbwrap.jobfiles import open_job_file
from hbwrap.output import read_generation, rotated_path

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: the keeper imports this module, and pathlib is 2 MB
    from pathlib import Path

FALLOC_FL_KEEP_SIZE = 1
PROBE_SIZE = 4096              # reserved to learn whether the log takes output again
RETRY_MIN_S, RETRY_MAX_S = 0.25, 30.0  # ... or, where nothing can be reserved, how often a write is tried


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
        steps = [(os.unlink, rotated_path(p), None) for p in (self.idx_path, self.log_path)]
        steps += [(os.replace, p, rotated_path(p)) for p in (self.idx_path, self.log_path)]
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
