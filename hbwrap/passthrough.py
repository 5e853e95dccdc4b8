"""Passthrough of the command's output (and hbwrap's own lines) to hbwrap's stdout/stderr, never blocking.

A slow or stopped reader of hbwrap's stdout (`hbwrap run ... | slow`, a terminal paused with Ctrl-S) must
not hold supervision back (SPEC §9). So each stream is written through a descriptor of its own in
non-blocking mode — a pipe or terminal is reopened through /proc/self/fd, so O_NONBLOCK never leaks into
the description hbwrap shares with its shell; a socket (systemd's journal stream) is written with
MSG_DONTWAIT; a regular file never waits for a reader and is written as it is — and what the reader does
not take yet waits in a bounded queue per stream; the supervisor polls for POLLOUT while a queue is not
empty. Beyond the bound the oldest bytes are left out (the job's log has every byte), and it says so once.
"""
from __future__ import annotations

import collections
import os
import select
import socket
import stat
import time

from hbwrap.output import STDERR, STDOUT

BACKLOG_CAP = 4 * 1024 * 1024  # per stream
LAG_NOTE_S = 1.0               # a reader this far behind is said to lag (once)
WRITE_MAX = 1 << 20
FALLBACK_WRITE = 512           # without a non-blocking descriptor: at most this much per POLLOUT


class Sink:
    """One of hbwrap's output descriptors, written without blocking."""

    def __init__(self, fd: int):
        self.fd = fd                 # what is polled for POLLOUT
        self.write_fd = fd
        self.sock: socket.socket | None = None
        self.chunk = WRITE_MAX
        self.own = False
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            mode = 0
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            try:
                self.write_fd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
                self.fd, self.own = self.write_fd, True
            except OSError:
                self.chunk = FALLBACK_WRITE  # POLLOUT promises room for a small write only
        elif stat.S_ISSOCK(mode):
            try:
                self.sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                self.chunk = FALLBACK_WRITE

    def write(self, data: memoryview) -> int:
        """Bytes written now (0 when the reader is not taking any); OSError when the reader is gone."""
        piece = data[:self.chunk]
        try:
            if self.sock is not None:
                return self.sock.send(piece, socket.MSG_DONTWAIT)
            return os.write(self.write_fd, piece)
        except (BlockingIOError, InterruptedError):
            return 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.own:
            os.close(self.write_fd)


class Passthrough:
    """Copies the command's bytes to hbwrap's own stdout/stderr, or keeps a bounded tail for `--quiet`.

    A closed reader (EPIPE, e.g. `hbwrap run ... | head`) turns passthrough off for that stream only:
    the command keeps running and its output is still logged, as `tee -p` does.
    """

    QUIET_CAP = 1024 * 1024

    def __init__(self, quiet: bool, stdout_fd: int = 1, stderr_fd: int = 2, note=None):
        self.quiet = quiet
        self.status: StatusLine | None = None
        self.note = note  # callable(text): say something on stderr (a lag, a gap)
        self.sinks = {STDOUT: Sink(stdout_fd), STDERR: Sink(stderr_fd)}
        self.queues: dict[str, collections.deque] = {STDOUT: collections.deque(), STDERR: collections.deque()}
        self.queued = {STDOUT: 0, STDERR: 0}
        self.blocked_since: dict[str, float | None] = {STDOUT: None, STDERR: None}
        self.broken: set[str] = set()
        self.lag_said: set[str] = set()
        self.skipped = {STDOUT: 0, STDERR: 0}
        self.kept: list[tuple[str, bytes]] = []
        self.kept_size = 0
        self.dropped = 0

    # --- the command's output ----------------------------------------------------------------------
    def write(self, stream: str, data: bytes) -> None:
        if self.quiet:
            self._keep(stream, data)
            return
        if self.status is not None:
            self.status.hide()
            self.status.wrote(data)
        self.send(stream, data)

    def message(self, line: str) -> None:
        """One of hbwrap's own lines on stderr, in order with the command's stderr."""
        if self.status is not None:
            self.status.hide()
        self.send(STDERR, line.encode("utf-8", "replace"))

    def send(self, stream: str, data: bytes) -> None:
        if stream in self.broken or not data:
            return
        queue = self.queues[stream]
        queue.append(memoryview(data))
        self.queued[stream] += len(data)
        if self.queued[stream] > BACKLOG_CAP:
            self._trim(stream)
        self._flush(stream)

    def _trim(self, stream: str) -> None:
        queue, dropped = self.queues[stream], 0
        while self.queued[stream] > BACKLOG_CAP and queue:
            first = queue[0]
            excess = self.queued[stream] - BACKLOG_CAP
            cut = min(len(first), excess)
            dropped += cut
            self.queued[stream] -= cut
            if cut == len(first):
                queue.popleft()
            else:
                queue[0] = first[cut:]
        if dropped and self.skipped[stream] == 0 and self.note is not None:
            self.note(f"the reader of hbwrap's {'stdout' if stream == STDOUT else 'stderr'} is too slow: output "
                      f"passthrough leaves out what it cannot take in time (the job's log has every byte)")
        self.skipped[stream] += dropped

    def _flush(self, stream: str) -> None:
        sink, queue = self.sinks[stream], self.queues[stream]
        while queue:
            first = queue[0]
            try:
                n = sink.write(first)
            except OSError:
                self.broken.add(stream)
                queue.clear()
                self.queued[stream] = 0
                return
            if n == 0:
                now = time.monotonic()
                since = self.blocked_since[stream]
                if since is None:
                    self.blocked_since[stream] = now
                elif now - since >= LAG_NOTE_S and stream not in self.lag_said and stream == STDOUT:
                    self.lag_said.add(stream)
                    if self.note is not None:
                        self.note("the reader of hbwrap's stdout is slow: passthrough lags behind the command "
                                  "(supervision goes on; the job's log has every byte)")
                return
            self.queued[stream] -= n
            if n == len(first):
                queue.popleft()
            else:
                queue[0] = first[n:]
        self.blocked_since[stream] = None

    # --- the supervisor's poll -----------------------------------------------------------------------
    def poll_fds(self) -> list[int]:
        """Descriptors to poll for POLLOUT: those with output waiting."""
        return [self.sinks[s].fd for s in (STDOUT, STDERR) if self.queues[s]]

    def ready(self, fds: set[int]) -> None:
        for stream in (STDOUT, STDERR):
            if self.queues[stream] and self.sinks[stream].fd in fds:
                self._flush(stream)

    def pending(self) -> bool:
        return any(self.queues.values())

    def flush_for(self, seconds: float) -> None:
        """At exit: keep writing while the readers take output, until they have it all or stall `seconds`."""
        last = time.monotonic()
        while self.pending():
            before = sum(self.queued.values())
            fds = self.poll_fds()
            try:
                select.select([], fds, [], max(0.0, last + seconds - time.monotonic()))
            except (OSError, ValueError):
                break
            for stream in (STDOUT, STDERR):
                self._flush(stream)
            if sum(self.queued.values()) < before:
                last = time.monotonic()
            elif time.monotonic() >= last + seconds:
                break

    # --- --quiet -------------------------------------------------------------------------------------
    def _keep(self, stream: str, data: bytes) -> None:
        if len(data) > self.QUIET_CAP:
            self.dropped += len(data) - self.QUIET_CAP
            data = data[-self.QUIET_CAP:]
        self.kept.append((stream, data))
        self.kept_size += len(data)
        while self.kept_size > self.QUIET_CAP:
            first_stream, first = self.kept[0]
            excess = self.kept_size - self.QUIET_CAP
            if len(first) <= excess:
                self.kept.pop(0)
                self.kept_size -= len(first)
                self.dropped += len(first)
            else:
                self.kept[0] = (first_stream, first[excess:])
                self.kept_size -= excess
                self.dropped += excess

    def replay(self) -> None:
        """Queue what `--quiet` held back (the run failed)."""
        for stream, data in self.kept:
            self.send(stream, data)
        self.kept, self.kept_size = [], 0

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()


class StatusLine:
    """A one-line live status on a terminal's stderr that never lands inside the command's output lines.

    It is erased before any passthrough write and drawn again only when the terminal's cursor is at the
    start of a line (the command's last write ended with a newline), so a partial line of the command is
    never split by it. It is written through the passthrough's stderr queue, so it never blocks either.
    """

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    MIN_REDRAW_S = 0.1

    def __init__(self, passthrough: Passthrough, fd: int = 2):
        self.passthrough = passthrough
        self.fd = fd
        self.shown = False
        self.at_line_start = True
        self.frame = 0
        self.drawn_at = 0.0
        passthrough.status = self

    def draw(self, text: str, now: float) -> None:
        if not self.at_line_start or now - self.drawn_at < self.MIN_REDRAW_S and self.shown:
            return
        if self.passthrough.queues[STDERR]:
            return  # the terminal is not taking output: do not add to it
        try:
            width = os.get_terminal_size(self.fd).columns or 80  # 0: a pty nobody sized
        except OSError:
            width = 80
        self.frame = (self.frame + 1) % len(self.FRAMES)
        line = f"{self.FRAMES[self.frame]} {text}"[:max(10, width - 1)]
        self.passthrough.send(STDERR, ("\r\x1b[2K" + line).encode("utf-8", "replace"))
        self.shown, self.drawn_at = True, now

    def hide(self) -> None:
        if self.shown:
            self.shown = False
            self.passthrough.send(STDERR, b"\r\x1b[2K")

    def wrote(self, data: bytes) -> None:
        """The command wrote `data` to the terminal."""
        if data:
            self.at_line_start = data.endswith(b"\n")
