"""The job's output log: the keeper's writer, the supervisor's follower, and passthrough to hbwrap's stdout/stderr.

Layout: `output.log` holds the command's bytes exactly as produced (stdout and stderr interleaved in
arrival order), so `tail -f` and `hbwrap logs` read it as it is. `output.idx` says which stream each
byte belongs to, as text lines written *before* the bytes they describe:

    G <n>        first line: the generation of this log (incremented by every rotation)
    O <offset>   from this byte offset on, the bytes are stdout
    E <offset>   ... stderr
    R <offset>   the log was rotated when it was this long: continue in generation n+1
"""
from __future__ import annotations

import os
from pathlib import Path

from hbwrap.jobstore import open_job_file

READ_CHUNK = 256 * 1024
STDOUT, STDERR = "O", "E"


def _open_append(path: Path) -> int:
    return open_job_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
    """The keeper's side: append output, note stream switches first, rotate beyond `max_size`."""

    # while the reader lags, rotation (which deletes the older log) waits, until the log is this big
    LAG_FACTOR, LAG_EXTRA = 4, 16 * 1024 * 1024

    def __init__(self, log_path: Path, idx_path: Path, max_size: int, may_rotate=None):
        self.log_path, self.idx_path, self.max_size = log_path, idx_path, max_size
        self.may_rotate = may_rotate  # callable(generation) -> bool: has the reader moved on far enough?
        self.generation = read_generation(idx_path)
        self._open()

    def _open(self) -> None:
        self.idx_fd = _open_append(self.idx_path)
        if self.generation is None or os.fstat(self.idx_fd).st_size == 0:
            self.generation = self.generation or 0
            _write_all(self.idx_fd, b"G %d\n" % self.generation)
        try:
            self.log_fd = _open_append(self.log_path)
        except BaseException:
            os.close(self.idx_fd)
            raise
        self.size = os.fstat(self.log_fd).st_size
        self.stream: str | None = None

    def write(self, stream: str, data: bytes) -> None:
        if self.size and self.size + len(data) > self.max_size and (
                self.may_rotate is None or self.size >= self.max_size * self.LAG_FACTOR + self.LAG_EXTRA
                or self.may_rotate(self.generation)):
            self.rotate()
        if stream != self.stream:
            _write_all(self.idx_fd, b"%s %d\n" % (stream.encode(), self.size))
            self.stream = stream
        _write_all(self.log_fd, data)
        self.size += len(data)

    def rotate(self) -> None:
        _write_all(self.idx_fd, b"R %d\n" % self.size)
        self.close()
        # Order matters to a reader: both old files go first (renaming over an existing file would also make
        # ext4 flush the data first: slow), so that any index/log pair a reader finds at one pair of paths is
        # always of one generation.
        for path in (self.idx_path, self.log_path):
            try:
                os.unlink(path.with_name(path.name + ".1"))
            except FileNotFoundError:
                pass
        for path in (self.idx_path, self.log_path):
            os.replace(path, path.with_name(path.name + ".1"))
        self.generation += 1
        self._open()

    def close(self) -> None:
        for fd in (self.log_fd, self.idx_fd):
            try:
                os.close(fd)
            except OSError:
                pass


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


class LogFollower:
    """The supervisor's side: read new bytes of the log with their stream, across rotations."""

    def __init__(self, log_path: Path, idx_path: Path, generation: int, offset: int):
        self.log_path, self.idx_path = log_path, idx_path
        self.generation, self.offset = generation, offset
        self.log_fd: int | None = None
        self.idx_fd: int | None = None
        self._idx_buf = b""
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
        rotated = (self.idx_path.with_name(self.idx_path.name + ".1"), self.log_path.with_name(self.log_path.name + ".1"))
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
        self._idx_buf, self._switches, self._rotated_at = b"", [], None
        self._idx_pos = 0
        self.stream = STDOUT
        return True

    def close(self) -> None:
        for fd in (self.log_fd, self.idx_fd):
            if fd is not None:
                os.close(fd)
        self.log_fd = self.idx_fd = None

    def _read_index(self) -> None:
        while True:
            data = os.pread(self.idx_fd, 65536, self._idx_pos)
            if not data:
                break
            self._idx_pos += len(data)
            self._idx_buf += data
        lines = self._idx_buf.split(b"\n")
        self._idx_buf = lines.pop()
        for line in lines:
            kind, _, num = line.partition(b" ")
            try:
                offset = int(num)
            except ValueError:
                continue
            if kind == b"R":
                self._rotated_at = offset
            elif kind in (b"O", b"E"):
                self._switches.append((offset, kind.decode()))

    def read(self, limit: int = READ_CHUNK, stop_at: tuple[int, int] | None = None) -> list[tuple[str, bytes]]:
        """Up to about `limit` new bytes as (stream, data) pieces; [] when nothing new is there yet.

        With `stop_at` (another reader's `position`), nothing at or beyond that position is read.
        """
        pieces: list[tuple[str, bytes]] = []
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
            self._read_index()  # after the data: every switch before its end is already written
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
                continue
            if self._rotated_at is not None and self.offset >= self._rotated_at:
                self._finished = (self.generation, self.offset)
                self.close()
                self.generation += 1
                self.offset = 0
                continue
            break
        return pieces

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
