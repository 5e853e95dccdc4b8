"""The keeper's pipe to its supervisor: the handshake line, then what the disk refused (a full disk).

A supervisor starts its keeper with the write end of a pipe. The keeper writes its handshake line there
(`ok PID START`, or `exec CODE TEXT` and closes it) and then keeps the pipe for binary frames, each a
HEADER and a body:

    D  output the log could not take: the log position it belongs at (generation, offset), stream, bytes
    X  how many bytes of such output the keeper dropped there instead (see below)
    K  the keeper's record (JSON), when keeper.json could not be written
    W  a file the keeper could not write (path) and the errno, once per failure

Every other byte of output reaches the supervisor through the log; only a full disk (ENOSPC, EDQUOT,
EROFS, ...) sends output this way, and the log's index records where the gap is (output.LogWriter), so
the supervisor can put these bytes back in their place in the stream.

The keeper never blocks on the pipe: what the pipe does not take yet waits in memory, up to SPILL_MAX
bytes of output. While that is full the keeper stops reading the command (its pipe fills up and it waits,
as it would writing to a slow terminal), but for SPILL_STALL_S at most: a supervisor that takes nothing
for that long is stopped or hung, and then further output that the disk refuses is dropped (and counted).
A supervisor that is gone (EPIPE) gets nothing more. The supervisor reads a frame only when the log
reader has reached its position, so its memory holds at most one frame.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import time

from hbwrap import jsonlite

try:  # collections' own deque, without the rest of collections (half a megabyte of the keeper)
    from _collections import deque
except ImportError:  # pragma: no cover - not CPython
    from collections import deque

HEADER = struct.Struct("!cQQcI")  # kind, generation (W: errno), offset, stream, body length
DATA, DROPPED, RECORD, WARNING = b"D", b"X", b"K", b"W"
SPILL_MAX = 16 * 1024 * 1024   # bytes of output the keeper holds for a slow supervisor
SPILL_STALL_S = 2.0            # a supervisor taking nothing for this long is not waited for
PIPE_SIZE = 1 << 20
READ_MAX = 1 << 20


class Frame:
    """Output the log could not take: it belongs at log position `position`, before the byte there."""

    __slots__ = ("position", "stream", "data")

    def __init__(self, position: tuple[int, int], stream: str, data: bytes):
        self.position, self.stream, self.data = position, stream, data

    def __eq__(self, other) -> bool:
        return isinstance(other, Frame) and (self.position, self.stream, self.data) == (
            other.position, other.stream, other.data)

    def __repr__(self) -> str:
        return f"Frame({self.position}, {self.stream!r}, {len(self.data)} bytes)"


def _grow(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size: the default size works too, with more turns


class ChannelWriter:
    """The keeper's end: frames queued in order and written without ever blocking."""

    def __init__(self, fd: int, clock=time.monotonic):
        self.fd = fd
        self.clock = clock
        os.set_blocking(fd, False)
        _grow(fd)
        self.queue: deque[list] = deque()
        self.queued = 0          # bytes of output (D bodies) queued, not yet in the pipe
        self.dead = False        # the supervisor's end is closed
        self.line_sent = False   # frames wait for the handshake line, which comes first
        self.dropped = 0         # bytes of output never handed to the pipe
        self._drop: list | None = None  # the latest X frame, added to while it waits in the queue
        self.moved_at = clock()  # the pipe last took something (or the queue was last empty)

    def line(self, text: str, keep_open: bool) -> None:
        """The handshake line (the pipe is empty then: it fits), then any frames queued before it."""
        try:
            os.write(self.fd, text.encode())
        except OSError:
            self._die()  # the supervisor is gone: carry on, the record on disk is what counts
        self.line_sent = True
        if not keep_open:
            self.close()
        self.flush()

    # --- frames --------------------------------------------------------------------------------------
    def data(self, position: tuple[int, int], stream: str, data: bytes) -> int:
        """Queue output the log refused; the number of its bytes dropped instead (0 when all is queued)."""
        if self.dead or self.queued >= SPILL_MAX:
            self.dropped += len(data)
            self._note_drop(position, len(data))
            return len(data)
        self._put(DATA, position[0], position[1], stream.encode(), data)
        self.queued += len(data)
        self.flush()
        return 0

    def _note_drop(self, position: tuple[int, int], n: int) -> None:
        """Tell the supervisor what it will not get: one X frame per run of drops at one position."""
        if self.dead:
            return
        last = self._drop  # [position, bytes, its queue entry]
        if last is not None and last[0] == position and self.queue and self.queue[-1] is last[2] \
                and len(last[2][0]) == last[3]:  # last in the queue, and not yet begun to be written
            self.queue.pop()
            n += last[1]
        body = str(n).encode()
        self._put(DROPPED, position[0], position[1], b"-", body)
        self._drop = [position, n, self.queue[-1], HEADER.size + len(body)]

    def record(self, doc: dict) -> None:
        self._put(RECORD, 0, 0, b"-", jsonlite.dumps(doc).encode())
        self.flush()

    def warning(self, path: str, err: int) -> None:
        self._put(WARNING, err, 0, b"-", os.fsencode(path))
        self.flush()

    def _put(self, kind: bytes, a: int, b: int, stream: bytes, body: bytes) -> None:
        if self.dead:
            return
        if not self.queue:
            self.moved_at = self.clock()  # the supervisor's time to take it starts now
        self.queue.append([memoryview(HEADER.pack(kind, a, b, stream, len(body)) + body),
                           len(body) if kind == DATA else 0])

    # --- the pipe ------------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return bool(self.queue) and not self.dead and self.line_sent

    def holding_back(self, now: float) -> bool:
        """Whether the keeper should stop reading the command: the queue is full and the supervisor takes it."""
        return self.pending and self.queued >= SPILL_MAX and now - self.moved_at < SPILL_STALL_S

    def release_at(self) -> float | None:
        """While holding back: when the supervisor has had its SPILL_STALL_S."""
        return self.moved_at + SPILL_STALL_S if self.pending and self.queued >= SPILL_MAX else None

    def flush(self) -> None:
        while self.queue and not self.dead and self.line_sent:
            entry = self.queue[0]  # [view still to write, bytes of output in the frame]
            try:
                n = os.write(self.fd, entry[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EPIPE: nobody reads any more
                self._die()
                return
            self.moved_at = self.clock()
            if n == len(entry[0]):
                self.queue.popleft()
                self.queued -= entry[1]
            else:
                entry[0] = entry[0][n:]

    def flush_for(self, quiet_s: float, until_room: bool = False) -> None:
        """Block until the queue is in the pipe (`until_room`: until it is below SPILL_MAX), or the supervisor
        has taken nothing for `quiet_s` (counted from now at the latest): then it is not waited for any more
        (what is queued is dropped)."""
        since = self.clock()
        while self.pending and not (until_room and self.queued < SPILL_MAX):
            last = max(self.moved_at, since)
            if self.clock() - last >= quiet_s:
                self._die()
                return
            try:
                select.select([], [self.fd], [], max(0.0, last + quiet_s - self.clock()))
            except InterruptedError:
                pass
            self.flush()

    def _die(self) -> None:
        self.dropped += sum(entry[1] for entry in self.queue)
        self.queue.clear()
        self.queued = 0
        self.dead = True

    def close(self) -> None:
        self._die()
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        self.dead = True


class ChannelReader:
    """The supervisor's end: the handshake line, then frames, read only as far as they are needed."""

    def __init__(self, fd: int):
        self.fd: int | None = fd
        os.set_blocking(fd, False)
        self.buf = bytearray()
        self.line_read = False
        self.record: dict | None = None   # the keeper's latest record sent this way
        self.records = 0                   # how many arrived (a change is news for the supervisor)
        self.warnings: list[tuple[str, int]] = []  # (path, errno) not yet said
        self.drops: list[tuple[tuple[int, int], int]] = []  # (position, bytes) the keeper dropped, not yet said
        self._head: Frame | None = None

    @property
    def closed(self) -> bool:
        return self.fd is None

    def _fill(self, want: int) -> bool:
        """Read more (at least what is there, up to `want` bytes); False when nothing came."""
        if self.fd is None:
            return False
        try:
            chunk = os.read(self.fd, max(65536, min(want, READ_MAX)))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return False
        self.buf += chunk
        return True

    def read_line(self) -> bytes | None:
        """The handshake line (without its newline): None until it is complete, or whatever came before EOF."""
        while b"\n" not in self.buf:
            if not self._fill(4096):
                if self.fd is None:
                    break
                return None
        end = self.buf.find(b"\n")
        line = bytes(self.buf[:end]) if end >= 0 else bytes(self.buf)
        del self.buf[:end + 1 if end >= 0 else len(self.buf)]
        self.line_read = True
        return line

    def peek(self) -> Frame | None:
        """The next frame of output, not consumed; records and warnings on the way are taken in."""
        if not self.line_read:
            return None
        while self._head is None:
            if len(self.buf) < HEADER.size:
                if not self._fill(HEADER.size - len(self.buf)):
                    return None
                continue
            kind, a, b, stream, length = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + length:
                if not self._fill(HEADER.size + length - len(self.buf)):
                    return None
                continue
            body = bytes(self.buf[HEADER.size:HEADER.size + length])
            del self.buf[:HEADER.size + length]
            if kind == DATA:
                self._head = Frame((a, b), stream.decode(errors="replace"), body)
            elif kind == RECORD:
                try:
                    doc = jsonlite.loads(body)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    self.record, self.records = doc, self.records + 1
            elif kind == DROPPED:
                try:
                    self.drops.append(((a, b), int(body)))
                except ValueError:
                    pass
            elif kind == WARNING:
                self.warnings.append((os.fsdecode(body), a if a < 4096 else errno.EIO))
        return self._head

    def pop(self) -> Frame | None:
        frame, self._head = self.peek(), None
        return frame

    def take_in(self) -> None:
        """Read what has arrived up to the next frame of output (records and warnings)."""
        self.peek()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
