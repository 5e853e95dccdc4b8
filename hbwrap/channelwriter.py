"""The keeper's end of the channel to its supervisor (the protocol: channel.py): frames queued in order and
written without ever blocking, output held for a slow supervisor up to SPILL_MAX."""
from __future__ import annotations

import fcntl
import os
import select
import time

from hbwrap import jsonlite
from hbwrap.channel import DATA, DROPPED, HEADER, PIPE_SIZE, RECORD, SPILL_MAX, SPILL_STALL_S, WARNING

try:  # collections' own deque, without the rest of collections (half a megabyte of the keeper)
    from _collections import deque
except ImportError:  # pragma: no cover - not CPython
    from collections import deque


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
