"""The supervisor's side of the output log (its layout: output.py): new bytes with their stream, across
rotations and gaps, and the tail `hbwrap logs` shows.
"""
from __future__ import annotations

import os

from hbwrap.jobfiles import open_job_file
from hbwrap.output import GAP, READ_CHUNK, STDOUT, Gap, rotated_path

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from pathlib import Path


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
        rotated = (rotated_path(self.idx_path), rotated_path(self.log_path))
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
