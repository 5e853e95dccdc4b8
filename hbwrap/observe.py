"""What the supervisor sees at one wake-up: new output (passed through and scanned for markers), heartbeat and
checkpoint files, the attempt's keeper and command, the probe — gathered into one policy.Observations.

Output comes from the job's log, and — where the disk refused it — from the keeper's channel (channel.py):
a frame of output is taken in when the log reader has reached its position, and at a gap the log records
(output.py: an `L` line) the reader waits there until the frames that fill it have come, so bytes pass
through and are scanned in the order the command wrote them. A gap nobody can fill (a takeover: the
frames went to the previous supervisor; or the keeper dropped them) is said once.
"""
from __future__ import annotations

import os

from hbwrap.errors import StateError
from hbwrap.jobstore import JobDir, open_job_file, parse_iso, read_job_file
from hbwrap.libc import keep_heap_for
from hbwrap.markers import MarkerScanner
from hbwrap.logfollower import LogFollower
from hbwrap.output import GAP, READ_CHUNK, STDERR, STDOUT, index_size, log_position
from hbwrap.policy import Observations

PUMP_BUDGET = 8 * 1024 * 1024  # bytes of output handled before deadlines are looked at again
RETRY_AFTER_BYTES = 1024 * 1024  # of an attempt's output, where its last retry-after marker is looked for
PRIME_BYTES = 256 * 1024       # a takeover fills the repetition window from this much of the log before the cursor
POLL_FALLBACK_S = 0.1          # without inotify, files and the keeper's record are looked at this often
UNBOUNDED = 1 << 62


def _open_read(path: str, in_job_dir: bool):
    """A file of the job dir never through a symlink (SPEC §9); a path the user chose, as it is."""
    if in_job_dir:
        return os.fdopen(open_job_file(path, os.O_RDONLY), "rb")
    return open(path, "rb")


def last_nonempty_line(path: str, in_job_dir: bool = False) -> tuple[bytes | None, str | None]:
    """(content tail, last non-empty line) of a checkpoint file; (None, None) if absent or refused."""
    try:
        with _open_read(path, in_job_dir) as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            content = f.read()
    except (OSError, StateError):
        return None, None
    for line in reversed(content.splitlines()):
        text = line.decode("utf-8", "replace").strip()
        if text:
            return content, text
    return content, None


def mtime_ns(path: str, in_job_dir: bool = False) -> int | None:
    try:
        return (os.lstat(path) if in_job_dir else os.stat(path)).st_mtime_ns
    except OSError:
        return None


class Observer:
    """Follows the job's output log and files; one `gather` per wake-up of the supervisor loop."""

    def __init__(self, job: JobDir, progress, fatal, checkpoint_path: str, heartbeat_path: str, passthrough,
                 note, retry_after=(), repeat: bool = False, attempt=lambda: None, cannot_write=None):
        self.job = job
        self.progress_patterns, self.fatal_patterns, self.retry_after_patterns = progress, fatal, list(retry_after)
        self.repeat = None
        if repeat:  # --repeat-timeout: every line goes through it (the marker scan looks at few lines only)
            from hbwrap.repeat import RepeatDetector

            self.repeat = RepeatDetector()
        self.checkpoint_path, self.heartbeat_path = checkpoint_path, heartbeat_path
        self.own_checkpoint = os.path.dirname(checkpoint_path) == job.path  # the default ones, in the job dir
        self.own_heartbeat = os.path.dirname(heartbeat_path) == job.path
        self.passthrough = passthrough
        self.note = note  # callable(text): an hbwrap line on stderr
        self.attempt = attempt  # callable -> the attempt's handle (launcher.AttemptHandle), or None
        self.cannot_write = cannot_write  # callable(path, errno): the keeper could not write a file
        self.awaiting = 0  # bytes of a gap at the reader's position still to come over the channel
        # (position, bytes) of output taken in from the channel there and not yet matched with a gap line
        self.live: tuple[tuple[int, int] | None, int] = (None, 0)
        self.records_seen = 0  # keeper records that came over the channel, as last looked at
        self.gap_said = False
        self.follower: LogFollower | None = None
        self.scanners: dict[str, MarkerScanner] = {}
        self.more_output = False
        self.heap_kept = False  # malloc tuned for output in bulk (libc.keep_heap_for), once it comes
        self.skipped_noted = 0
        self.heartbeat_mtime: int | None = None
        self.checkpoint_content: bytes | None = None
        self.run_log_start: tuple[int, int] | None = None
        self.attempt_log_start: tuple[int, int] | None = None  # where the attempt being watched began
        self._cursor_fd: int | None = None
        self._now = 0.0  # the instant of the pump in progress (the repetition window's clock)
        self.run_id = ""

    # --- the log -------------------------------------------------------------------------------------
    def follow_from(self, run_id: str, generation: int, offset: int, history: int = 0) -> None:
        self.run_id = run_id
        self.follower = LogFollower(self.job.log_file, self.job.index_file, generation, offset, gaps=True,
                                    history=history)
        self.awaiting, self.live = 0, (None, 0)
        self.scanners = {s: MarkerScanner(self.progress_patterns, self.fatal_patterns) for s in (STDOUT, STDERR)}
        self.skipped_noted = 0
        self.save_cursor()

    def follow_new(self, run_id: str) -> None:
        """A new run: follow only what is written from now on."""
        history = index_size(self.job.index_file)  # gaps recorded so far are another run's
        gen, offset = log_position(self.job.log_file, self.job.index_file)
        self.run_log_start = (gen, offset)
        self.follow_from(run_id, gen, offset, history)

    def follow_recorded(self, run_id: str) -> None:
        """A takeover: read on from where the previous supervisor got to (nothing repeated, nothing skipped)."""
        self.follow_from(run_id, *(self.read_cursor(run_id) or log_position(self.job.log_file, self.job.index_file)))

    def save_cursor(self) -> None:
        """Where the scan has read the log up to, so a takeover neither repeats nor skips output.

        One pwrite of a fixed-width line into a descriptor kept open for the run (this is on the output
        path); the keeper reads the held generation from it before rotating the log.
        """
        gen, offset = self.follower.position
        held = self.follower.held_generation
        lagging = self.passthrough.held_generation()
        if lagging is not None:
            held = min(held, lagging)
        try:
            if self._cursor_fd is None:
                self._cursor_fd = open_job_file(self.job.cursor_file, os.O_WRONLY | os.O_CREAT)
            os.pwrite(self._cursor_fd, b"%s %020d %020d %020d\n" % (self.run_id.encode(), gen, offset,
                                                                    held), 0)
        except (OSError, StateError):
            pass

    def read_cursor(self, run_id: str) -> tuple[int, int] | None:
        try:
            parts = read_job_file(self.job.cursor_file, 4096).split()
            if len(parts) >= 3 and parts[0].decode() == run_id:
                return int(parts[1]), int(parts[2])
        except (OSError, StateError, ValueError, UnicodeDecodeError):
            pass
        return None

    def output_since(self, position: tuple[int, int] | None, limit: int) -> bytes:
        """What the log holds from `position` (a follower position) on, at most `limit` bytes."""
        if position is None or position[0] != self.follower.position[0]:
            return self.output_tail(limit)
        try:
            with os.fdopen(open_job_file(self.job.log_file, os.O_RDONLY), "rb") as f:
                f.seek(position[1])
                return f.read(limit)
        except (OSError, StateError):
            return b""

    def mark_attempt_start(self) -> None:
        self.attempt_log_start = log_position(self.job.log_file, self.job.index_file)

    def output_tail(self, n: int) -> bytes:
        """The last `n` bytes of this run's output (never the previous run's)."""
        try:
            with os.fdopen(open_job_file(self.job.log_file, os.O_RDONLY), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                start = max(0, size - n)
                for begin in (self.run_log_start, self.attempt_log_start):  # this run's, this attempt's output only
                    if begin is not None and begin[0] == self.follower.generation:
                        start = max(start, begin[1])
                f.seek(start)
                return f.read(max(0, size - start))
        except (OSError, StateError):
            return b""

    def last_retry_after(self) -> str | None:
        """The value of the attempt's last retry-after marker, looked for in its final RETRY_AFTER_BYTES.

        A rate limit is a command's last words before it gives up: looking at the end of an attempt, and
        not at every chunk, keeps a second literal out of the hot path of the marker scan.
        """
        if not self.retry_after_patterns:
            return None
        tail = self.output_tail(RETRY_AFTER_BYTES).decode("utf-8", "replace")
        for line in reversed(tail.replace("\r", "\n").split("\n")):
            for pattern in self.retry_after_patterns:
                m = pattern.search(line)
                if m:
                    if "delay" in pattern.groupindex:
                        return m.group("delay")
                    return m.group(1) if pattern.groups else m.group(0)
        return None

    def prime_repeat(self, last_new_at: float | None) -> None:
        """A takeover: the lines before the cursor fill the repetition window, so the deadline goes on."""
        if self.repeat is None:
            return
        gen, offset = self.follower.position
        try:
            with os.fdopen(open_job_file(self.job.log_file, os.O_RDONLY), "rb") as f:
                start = max(0, offset - PRIME_BYTES)
                f.seek(start)
                data = f.read(offset - start)
        except (OSError, StateError):
            return
        if start:
            data = data[data.find(b"\n") + 1:]  # from a line start
        at = last_new_at if last_new_at is not None else 0.0
        self.repeat.last_new_at = at
        self.repeat.feed(data, at)
        self.repeat.last_new_at = at

    def pump(self, obs: Observations, budget: int = PUMP_BUDGET, now: float = 0.0, final: bool = False) -> None:
        """New output, up to about `budget` bytes: passed through and scanned (and, with --repeat-timeout, fed
        to the repetition window at `now`). `final`: the attempt's processes are gone, so a gap whose bytes
        have not come over the channel by now never will be filled."""
        self._now = now
        got = 0
        pt = self.passthrough
        channel = self.channel()
        while got < budget:
            frame = channel.peek() if channel is not None else None
            here = self.follower.here
            if frame is not None and frame.position <= here:
                channel.pop()
                got += len(frame.data)
                self._take_frame(frame, here, obs)
                continue
            if self.awaiting:
                if channel is not None and not channel.closed and not final:
                    break  # they are on their way (the channel's descriptor wakes the loop)
                self._unfilled(self.awaiting, here)
                self.awaiting = 0
            before = self.follower.position
            pieces = self.follower.read(stop_at=frame.position if frame is not None else None)
            if not pieces:
                break
            if pt.feeding() and not pt.has_room(sum(len(data) for stream, data in pieces if stream != GAP)):
                pt.start_lag(before)  # its reader is slow: passthrough reads these bytes back from the log
            feeding = pt.feeding()
            for stream, data in pieces:
                if stream == GAP:
                    self._gap(data)
                    continue
                got += len(data)
                if len(data) >= READ_CHUNK and not self.heap_kept:
                    self.heap_kept = keep_heap_for(READ_CHUNK) or True
                if feeding:
                    pt.write(stream, data)
                self._markers(self.scanners[stream].feed(data, self._feed_repeat(data, obs)), obs)
        if final and channel is not None:
            while (frame := channel.pop()) is not None:  # the log has nothing more: they come at its end
                got += len(frame.data)
                self._take_frame(frame, self.follower.here, obs)
            self._channel_news(channel)
        if final and getattr(self.attempt(), "unsent", 0):
            # the keeper's record: refused output that reached no supervisor (none was there, or it was stopped)
            self._unfilled(self.attempt().unsent, self.follower.here)
        pt.catch_up(self.follower.position)
        self.more_output = got >= budget
        if channel is not None:
            self._channel_news(channel)
        if self.follower.skipped_generations != self.skipped_noted:
            lost = self.follower.skipped_generations - self.skipped_noted
            self.skipped_noted = self.follower.skipped_generations
            self.note(f"output passthrough fell behind the log rotation: {lost} rotated log(s) of output were "
                      f"gone before they could be read (raise --log-max-size)")
        if got:
            self.save_cursor()
            obs.output = True

    def _repeats(self, new: bool, lines_before: int, obs: Observations) -> None:
        if self.repeat.lines > lines_before:  # lines ended in what was fed (a new one among them, or not)
            obs.line = True
            obs.new_line = obs.new_line or new

    def _feed_repeat(self, data: bytes, obs: Observations) -> bytes | None:
        """Feed the repetition window (with --repeat-timeout); its uniform line, for the marker scan."""
        if self.repeat is None:
            return None
        lines = self.repeat.lines
        self._repeats(self.repeat.feed(data, self._now), lines, obs)
        return self.repeat.uniform_line

    def _take_frame(self, frame, here: tuple[int, int], obs: Observations) -> None:
        """Output the disk refused, in its place: passed through and scanned like the log's."""
        pt = self.passthrough
        if frame.position == here:
            if self.awaiting:
                self.awaiting = max(0, self.awaiting - len(frame.data))
            else:
                at, n = self.live
                self.live = (here, (n if at == here else 0) + len(frame.data))
        if pt.feeding() and not pt.has_room(len(frame.data)):
            pt.start_lag(self.follower.position)
        if pt.feeding():
            pt.write(frame.stream, frame.data)
        else:
            pt.spilled(here, frame.stream, frame.data)  # a lagging passthrough puts it in at its place
        uniform = self._feed_repeat(frame.data, obs)
        scanner = self.scanners.get(frame.stream)
        if scanner is not None:
            self._markers(scanner.feed(frame.data, uniform), obs)

    def _gap(self, gap) -> None:
        """The log's record of a gap at the reader's position: what of it came live counts; wait for the rest."""
        here = self.follower.here
        at, n = self.live
        taken = n if at == here else 0
        need = max(0, gap.size - gap.unsent)
        used = min(need, taken)
        self.live = (here, taken - used)
        self.awaiting = need - used
        if gap.unsent:
            self._unfilled(gap.unsent, here)

    def _unfilled(self, size: int, here: tuple[int, int]) -> None:
        if not self.gap_said:
            self.gap_said = True
            self.note(f"{size} bytes of output are missing from {self.job.log_file} (generation {here[0]}, "
                      f"offset {here[1]}) and could not be passed through: the disk refused them and they did "
                      f"not reach this supervisor")

    def _channel_news(self, channel) -> None:
        while channel.drops:
            position, size = channel.drops.pop(0)
            self._unfilled(size, position)
        while channel.warnings:
            path, err = channel.warnings.pop(0)
            if self.cannot_write is not None:
                self.cannot_write(path, err)

    def channel(self):
        """The attempt's channel (channelreader.ChannelReader), None when there is none (a takeover, a fake)."""
        return getattr(self.attempt(), "channel", None)

    def keeper_news(self) -> bool:
        """Whether the keeper sent a new record over its channel (keeper.json was refused) since last asked."""
        channel = self.channel()
        if channel is None or channel.records == self.records_seen:
            return False
        self.records_seen = channel.records
        return True

    def _markers(self, found, obs: Observations) -> None:
        for kind, value in found:
            if kind == "fatal":
                obs.fatal_lines.append(value)
            else:
                obs.progress.append(value)

    def drain(self, obs: Observations, now: float = 0.0) -> None:
        """Everything the attempt wrote, to its very end (its processes are gone): scan and pass it all."""
        self.pump(obs, UNBOUNDED, now, final=True)
        for scanner in self.scanners.values():
            self._markers(scanner.flush(), obs)
        value = self.last_retry_after()
        if value is not None:
            obs.retry_after.append(value)
        if self.repeat is not None:
            lines = self.repeat.lines
            self._repeats(self.repeat.flush(now), lines, obs)
        self.check_files(None, obs)

    # --- files ---------------------------------------------------------------------------------------
    def baseline(self) -> tuple[int | None, bytes | None]:
        """What the heartbeat and checkpoint files hold now: later changes are signs of life and progress."""
        return (mtime_ns(self.heartbeat_path, self.own_heartbeat),
                last_nonempty_line(self.checkpoint_path, self.own_checkpoint)[0])

    def set_baseline(self, baseline: tuple[int | None, bytes | None]) -> None:
        self.heartbeat_mtime, self.checkpoint_content = baseline

    def watched_dirs(self) -> set[str]:
        return {self.job.path, os.path.dirname(self.checkpoint_path), os.path.dirname(self.heartbeat_path)}

    def open_inotify(self, verbose: bool):
        """An inotify watch of every directory whose files matter, or None (then files are polled)."""
        from hbwrap.inotify import Inotify

        inotify = None
        try:
            inotify = Inotify()
            for d in self.watched_dirs():
                inotify.watch_dir(d)
            return inotify
        except OSError as exc:
            if inotify is not None:
                inotify.close()
            if verbose:
                self.note(f"inotify unavailable ({exc.strerror or exc}); checking files every {POLL_FALLBACK_S}s")
            return None

    def check_files(self, changed: set | None, obs: Observations) -> None:
        """`changed`: the (dir, name) pairs inotify reported, or None to look at every file."""
        hb, cp = self.heartbeat_path, self.checkpoint_path
        if changed is None or os.path.split(hb) in changed:
            mtime = mtime_ns(hb, self.own_heartbeat)
            if mtime is not None and mtime != self.heartbeat_mtime:
                self.heartbeat_mtime = mtime
                obs.life = True
        if changed is None or os.path.split(cp) in changed:
            content, line = last_nonempty_line(cp, self.own_checkpoint)
            # an empty file is the middle of a rewrite (open with truncation, then write): not a change yet
            if content and content != self.checkpoint_content:
                self.checkpoint_content = content
                obs.progress.append(line)

    def check_answer(self, changed: set | None, obs: Observations, offset_s: float) -> None:
        """An answer of hbwrap approve/deny in the job dir: taken (removed) and observed, whatever the phase
        (policy judges whether it answers the pending restart). `offset_s`: wall - mono now."""
        if changed is not None and os.path.split(self.job.approval_file) not in changed:
            return
        if not os.path.lexists(self.job.approval_file):
            return  # (the common case: no answer, and no import of approval.py for it)
        from hbwrap.approval import take_answer

        try:
            answer = take_answer(self.job)
        except StateError as exc:
            self.note(f"ignored an answer file: {exc}")
            return
        if answer is not None:
            at = parse_iso(answer["ts"])
            obs.answer = {**answer, "at": at - offset_s if at is not None else None}

    def keeper_changed(self, changed: set | None) -> bool:
        return (changed is None or os.path.split(self.job.keeper_file) in changed
                or self.keeper_news())

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
        if self._cursor_fd is not None:
            os.close(self._cursor_fd)
            self._cursor_fd = None
