"""Passthrough of the command's output (and hbwrap's own lines) to hbwrap's stdout/stderr, never blocking.

A slow or stopped reader of hbwrap's stdout (`hbwrap run ... | slow`, a terminal paused with Ctrl-S) must
not hold supervision back (SPEC §9). So each stream is written through a descriptor of its own in
non-blocking mode — a pipe or terminal is reopened through /proc/self/fd, so O_NONBLOCK never leaks into
the description hbwrap shares with its shell; a socket (systemd's journal stream) is written with
MSG_DONTWAIT; a regular file never waits for a reader and is written as it is — and what the reader does
not take yet waits in a bounded queue per stream; the supervisor polls for POLLOUT while a queue is not
empty. Beyond the bound, passthrough stops taking the bytes in memory and lags: it reads them back from
the job's log with a follower of its own (the log has every byte; rotation waits for it), until it has
caught up with the supervisor's scan, and says once that its reader is slow. Nothing is lost unless the
reader falls more than the rotation's bound behind (then it says what it left out). Output that is not
in the log (the disk refused it; it came over the keeper's channel) is held in memory meanwhile, up to
HELD_CAP, and put in when the lagging reader reaches its place; beyond that it is left out, and said once.
"""
from __future__ import annotations

import collections
import os
import select
import stat
import time

from hbwrap.logfollower import LogFollower
from hbwrap.output import READ_CHUNK, STDERR, STDOUT

BACKLOG_CAP = 4 * 1024 * 1024  # bytes held in memory for both streams; beyond it, read back from the log
HELD_CAP = 16 * 1024 * 1024    # lagging: bytes held that are not in the log (a full disk), as much as a keeper holds
REFILL_BELOW = 256 * 1024      # lagging: read the next piece of the log once the queues are this short
LAG_NOTE_S = 1.0               # a reader this long without taking what waits for it is said to be slow (once)
WRITE_MAX = 1 << 20
FALLBACK_WRITE = 512           # without a non-blocking descriptor: at most this much per POLLOUT


class Sink:
    """One of hbwrap's output descriptors, written without blocking."""

    def __init__(self, fd: int):
        self.fd = fd                 # what is polled for POLLOUT
        self.write_fd = fd
        self.sock = None             # a socket.socket when the descriptor is a socket
        self.dontwait = 0            # socket.MSG_DONTWAIT then
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
            import socket  # only then: half a megabyte a supervisor on pipes does without

            self.dontwait = socket.MSG_DONTWAIT
            try:
                self.sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                self.chunk = FALLBACK_WRITE

    def write(self, data: memoryview) -> int:
        """Bytes written now (0 when the reader is not taking any); OSError when the reader is gone."""
        piece = data[:self.chunk]
        try:
            if self.sock is not None:
                return self.sock.send(piece, self.dontwait)
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

    def __init__(self, quiet: bool, stdout_fd: int = 1, stderr_fd: int = 2, note=None, log_paths=None,
                 discard: bool = False):
        self.quiet = quiet
        self.discard = discard  # the command's output goes nowhere (hbwrap stop): only hbwrap's own lines
        self.status: StatusLine | None = None
        self.note = note  # callable(text): say something on stderr (a lag, a gap)
        self.log_paths = log_paths  # (output.log, output.idx): where a lagging passthrough reads from
        self.sinks = {STDOUT: Sink(stdout_fd), STDERR: Sink(stderr_fd)}
        self.queues: dict[str, collections.deque] = {STDOUT: collections.deque(), STDERR: collections.deque()}
        self.queued = {STDOUT: 0, STDERR: 0}
        self.broken: set[str] = set()
        self.lag: LogFollower | None = None
        self.lag_said = False
        self.blocked_since: float | None = None  # stdout has had bytes waiting since then
        self.skipped_noted = 0
        self.held: collections.deque = collections.deque()  # (log position, stream, bytes) not in the log
        self.held_size = 0
        self.held_lost_said = False
        self.kept: list[tuple[str, bytes]] = []
        self.kept_size = 0
        self.dropped = 0

    # --- the command's output ----------------------------------------------------------------------
    def feeding(self) -> bool:
        """Whether the supervisor should hand over what it reads (False while lagging: we read the log)."""
        return self.lag is None

    def has_room(self, size: int) -> bool:
        return self.quiet or self.discard or self.log_paths is None or sum(self.queued.values()) + size <= BACKLOG_CAP

    def start_lag(self, position: tuple[int, int]) -> None:
        """The reader is too slow to hold what it has not taken in memory: from `position` on, read the log."""
        self.lag = LogFollower(*self.log_paths, *position)
        self._say_lag()

    def _say_lag(self) -> None:
        if not self.lag_said and self.note is not None:
            self.lag_said = True
            self.note("the reader of hbwrap's output is slow: passthrough lags behind the command and catches up "
                      "from the job's log (supervision goes on; nothing is lost)")

    def check_lag(self, now: float) -> None:
        """Called at every wake-up: say once when stdout's reader has taken nothing for LAG_NOTE_S."""
        if not self.queues[STDOUT]:
            self.blocked_since = None
        elif self.blocked_since is None:
            self.blocked_since = now
        elif now - self.blocked_since >= LAG_NOTE_S:
            self._say_lag()

    def catch_up(self, scan_position: tuple[int, int]) -> None:
        """Lagging: pass on more of the log, never beyond where the supervisor's scan is; back to taking
        output in memory once caught up."""
        lag = self.lag
        if lag is None:
            return
        while sum(self.queued.values()) < REFILL_BELOW and (self.held or not lag.caught_up(scan_position)):
            if self.held and lag.caught_up(self.held[0][0]):
                _, stream, data = self.held.popleft()
                self.held_size -= len(data)
                self.write(stream, data)
                continue
            pieces = lag.read(READ_CHUNK, stop_at=min(scan_position, self.held[0][0]) if self.held else scan_position)
            if not pieces:
                break
            for stream, data in pieces:
                self.write(stream, data)
        if lag.skipped_generations != self.skipped_noted and self.note is not None:
            self.note(f"output passthrough fell behind the log rotation: "
                      f"{lag.skipped_generations - self.skipped_noted} rotated log(s) of output were gone before "
                      f"they could be passed on (raise --log-max-size)")
            self.skipped_noted = lag.skipped_generations
        if (lag.caught_up(scan_position) and not self.held) or self.broken == {STDOUT, STDERR}:
            lag.close()
            self.lag = None
            self.held.clear()
            self.held_size = 0

    def spilled(self, position: tuple[int, int], stream: str, data: bytes) -> None:
        """Lagging: output that is not in the log (the disk refused it), to put in at log `position`."""
        if self.held_size + len(data) > HELD_CAP:
            if not self.held_lost_said and self.note is not None:
                self.held_lost_said = True
                self.note("the disk is full and the reader of hbwrap's output is slow: passthrough leaves out "
                          "output that it can neither hold in memory nor read back from the log")
            return
        self.held.append((position, stream, data))
        self.held_size += len(data)

    def held_generation(self) -> int | None:
        """The oldest log generation a lagging passthrough still needs (rotation must keep it)."""
        return self.lag.held_generation if self.lag is not None else None

    def write(self, stream: str, data: bytes) -> None:
        if self.discard:
            return
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
        self.queues[stream].append(memoryview(data))
        self.queued[stream] += len(data)
        self._flush(stream)

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
                return
            self.queued[stream] -= n
            if stream == STDOUT:
                self.blocked_since = None  # it took something
            if n == len(first):
                queue.popleft()
            else:
                queue[0] = first[n:]

    # --- the supervisor's poll -----------------------------------------------------------------------
    def poll_fds(self) -> list[int]:
        """Descriptors to poll for POLLOUT: those with output waiting."""
        return [self.sinks[s].fd for s in (STDOUT, STDERR) if self.queues[s]]

    def ready(self, fds: set[int]) -> None:
        for stream in (STDOUT, STDERR):
            if self.queues[stream] and self.sinks[stream].fd in fds:
                self._flush(stream)

    def pending(self) -> bool:
        return any(self.queues.values()) or self.lag is not None

    def flush_for(self, seconds: float, scan_position: tuple[int, int] | None = None) -> None:
        """At exit: keep writing while the readers take output, until they have it all or stall `seconds`."""
        last = time.monotonic()
        while self.pending():
            if scan_position is not None:
                self.catch_up(scan_position)
            elif self.lag is not None:
                self.lag.close()
                self.lag = None
            before = sum(self.queued.values())
            fds = self.poll_fds()
            if not fds:
                continue
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
        if self.lag is not None:
            self.lag.close()
            self.lag = None
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
