"""What a supervisor records and says: its events (and the alerts they trigger), its state.json, its `hbwrap:`
lines on stderr (held back under --quiet) and the live status line's text.

A full disk (or any failing write) costs the run nothing but what it cannot write: state.json keeps its last
good version (atomic replace) while the lease is renewed by touching it, and its last one, how the run
ended, goes into space set aside for it (jobstore.make_reserve); events wait in memory (up to
EVENT_BACKLOG) and are appended, in order, as soon as the disk takes them again; and hbwrap says once per
run, also under --quiet, what it could not write (cannot_write: the keeper's files come through its channel).
"""
from __future__ import annotations

import collections
import errno
import os

from hbwrap import lease, policy
from hbwrap.jobstore import JobDir, make_reserve, write_json_atomic
from hbwrap.model import ACTIVE_VALUES, OWN_EVENTS, Event, Phase, iso
from hbwrap.options import RunOptions

ALERT_CLOSE_WAIT_S = 10.0  # SPEC §9: before exiting, up to 10 s for alerts still in flight
EVENT_BACKLOG = 10_000     # events held while the disk refuses them (the oldest go first beyond it)
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def message(text: str) -> None:
    """An `hbwrap:` line straight to fd 2 (before a run exists, or when nothing else may write)."""
    try:
        os.write(2, f"hbwrap: {text}\n".encode(errors="replace"))
    except OSError:
        pass


def span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


WALL_STEP_S = 0.01  # a larger move of wall against monotonic time is a step of the system clock


class Journal:
    """The supervisor's voice and memory; `st` is the run state it reports on (set once the run exists)."""

    def __init__(self, job: JobDir, clock, opts: RunOptions, passthrough):
        self.job, self.clock = job, clock
        self.opts, self.passthrough = opts, passthrough
        self.st: policy.RunState | None = None
        self.messages: list[str] = []
        self.alerter = None
        self.alert_warnings: collections.deque[str] = collections.deque()  # appended by delivery threads
        # events the delivery threads report (alert_failed, alert_output): the loop writes them, as only one
        # thread may append to events.jsonl and its backlog
        self.alert_events: collections.deque[tuple[Event, dict]] = collections.deque()
        self.closing_since: float | None = None
        self.state_write_failed = False
        self.my_start: int | None = None
        self.unwritten: collections.deque[bytes] = collections.deque(maxlen=EVENT_BACKLOG)  # lines the disk refused
        self.said_cannot: set = set()
        self.reserved = False
        self._offset: float | None = None

    def wall_offset(self) -> float:
        """Wall minus monotonic time, for writing monotonic instants as wall times. Held steady, so that one
        instant reads the same in every event and in state.json (two readings of the two clocks differ by
        microseconds, enough to round to different milliseconds); taken again only when the wall clock
        has moved against the monotonic one (a step of the system time) by more than 10 ms."""
        offset = self.clock.wall() - self.clock.mono()
        if self._offset is None or abs(offset - self._offset) > WALL_STEP_S:
            self._offset = offset
        return self._offset

    def use(self, opts: RunOptions, passthrough) -> None:
        self.opts, self.passthrough = opts, passthrough

    # --- lines and events ----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """An `hbwrap:` line on stderr (held back with --quiet until the run fails)."""
        if self.opts.quiet:
            self.messages.append(text)
        else:
            self.passthrough.message(f"hbwrap: {text}\n")

    def emit(self, event: Event, **fields) -> dict:
        rec = self.st.rec
        record = {"ts": iso(self.clock.wall()), "job": self.opts.name, "run_id": rec.run_id, "attempt": rec.attempt,
                  "event": event.value}
        offset_s = self.wall_offset()
        record.update({k: iso(v + offset_s) if isinstance(v, policy.At) else v
                       for k, v in fields.items() if v is not None})
        self.unwritten.append(self.job.event_line(record))
        self.write_events()
        if self.alerter is not None and event not in OWN_EVENTS and event is not Event.ALERT_FAILED:
            self.alerter.notify(record)
        return record

    def write_events(self) -> None:
        """Append the events not written yet, in order; those the disk refuses wait for the next try."""
        while self.unwritten:
            try:
                self.job.append_event_line(self.unwritten[0])
            except OSError as exc:
                self.cannot_write(str(self.job.events_file), exc.errno, "events wait in memory meanwhile")
                return
            self.unwritten.popleft()

    def cannot_write(self, path: str, err: int | None, meanwhile: str = "") -> None:
        """Say once what could not be written (once for every file when the disk is full), then carry on."""
        full = err in DISK_FULL
        key = ("disk", err) if full else path
        if key in self.said_cannot:
            return
        self.said_cannot.add(key)
        text = f"cannot write {path}: {os.strerror(err) if err else 'failed'}"
        if full:
            text += ("; the command runs on under supervision and its output still passes through, but hbwrap "
                     "cannot write its files (the log misses this output, state.json keeps its last good version, "
                     "events wait in memory) until space returns")
        elif meanwhile:
            text += f"; {meanwhile}"
        self.passthrough.message(f"hbwrap: {text}\n")  # also under --quiet: cron should hear of it

    def replay_quiet(self) -> None:
        """--quiet and the run failed: everything held back, then the log's path."""
        if not self.opts.quiet:
            return
        pt = self.passthrough
        if pt.dropped:
            pt.message(f"hbwrap: output of this run truncated to its last {pt.QUIET_CAP // 1024} KiB; "
                       f"the full log is {self.job.log_file}\n")
        pt.replay()
        for text in self.messages:
            pt.message(f"hbwrap: {text}\n")
        pt.message(f"hbwrap: full output log: {self.job.log_file}\n")

    # --- state.json ----------------------------------------------------------------------------------
    def write_state(self, held) -> None:
        """The run record, renewing the lease; `held` is the attempt handle whose keeper the record names.

        Fenced: a newer supervisor of the run (higher generation) makes this one step down instead.
        """
        st, rec, now = self.st, self.st.rec, self.clock.mono()
        lease.check_fence(self.job, rec.run_id, rec.generation)
        rec.supervisor_pid, rec.supervisor_start = os.getpid(), self.my_start
        rec.lease_renewed_at, rec.lease_s, rec.updated_at = self.clock.wall(), self.opts.lease_s, now
        rec.next_deadline_at, rec.next_deadline = policy.recorded_deadline(st, self.opts)
        rec.keeper_pid, rec.keeper_start = (held.keeper_pid, held.keeper_start) if held else (None, None)
        try:
            # how the run ended is its last word: a full disk is met with the space set aside for it
            write_json_atomic(self.job.state_file, rec.to_doc(self.wall_offset()),
                              reserve=rec.status not in ACTIVE_VALUES)
            self.state_write_failed = False
            if not self.reserved:
                self.reserved = make_reserve(self.job.state_file)
        except OSError as exc:
            self.cannot_write(str(self.job.state_file), exc.errno, "it keeps its last good version")
            self.state_write_failed = True
            try:
                os.utime(self.job.state_file)  # the lease is renewed all the same (lease.renewed_at)
            except OSError:
                pass
        policy.note_state_written(st, now, self.opts)
        if self.unwritten:
            self.write_events()  # the disk may take them again

    # --- alerts --------------------------------------------------------------------------------------
    def start_alerts(self, output_tail) -> None:
        opts = self.opts
        if not (opts.alert_cmd or opts.alert_webhooks or opts.ping_url):
            return
        from hbwrap.alerts.delivery import Alerter

        self.alerter = Alerter(job=opts.name, alert_cmd=opts.alert_cmd, webhooks=list(opts.alert_webhooks),
                               webhook_format=opts.webhook_format,
                               alert_on=frozenset(opts.alert_on) if opts.alert_on is not None else None,
                               ping_url=opts.ping_url,
                               record=lambda fields: self.alert_events.append((Event.ALERT_FAILED, fields)),
                               delivered=self._alert_delivered, output_tail=output_tail,
                               warn=self.alert_warnings.append)  # printed by the loop

    def _alert_delivered(self, fields: dict) -> None:
        """A delivery went through: keep what a successful alert command printed (bounded, masked) in the events."""
        if fields.get("channel") == "alert-cmd" and fields.get("output"):
            self.alert_events.append((Event.ALERT_OUTPUT, {"channel": fields["channel"],
                                                           "alert_event": fields.get("alert_event"),
                                                           "output": fields["output"]}))

    def alert_fd(self) -> int | None:
        fd = self.alerter.fileno() if self.alerter is not None else -1
        return fd if fd >= 0 else None

    def alerts_woke(self) -> None:
        self.alerter.drain_wakeups()

    def alert_news(self) -> None:
        """What the delivery threads reported, in the loop's thread: their events into the event log, and
        alert failures one line each on stderr, also under --quiet (SPEC §9)."""
        while self.alert_events:
            event, fields = self.alert_events.popleft()
            self.emit(event, **fields)
        while self.alert_warnings:
            self.passthrough.message(f"hbwrap: {self.alert_warnings.popleft()}\n")

    def alerts_closed(self, now: float) -> bool:
        """At the end of the run: True once alerts in flight are delivered, or have had their 10 s."""
        if self.alerter is None:
            return True
        if self.closing_since is None:
            self.closing_since = now
            self.alerter.begin_close()
        if self.alerter.in_flight() and now < self.closing_since + ALERT_CLOSE_WAIT_S:
            return False
        self.alerter.abandon(now - self.closing_since)
        self.alert_news()
        self.alerter = None
        return True

    def close_deadline(self) -> float | None:
        return self.closing_since + ALERT_CLOSE_WAIT_S if self.closing_since is not None else None

    def close(self) -> None:
        """The loop did not get to close the alerts (an error): give them their time here."""
        if self.alerter is not None:
            self.alerter.close(ALERT_CLOSE_WAIT_S)
            self.alert_news()
            self.alerter = None

    def own_pids(self) -> set[int]:
        return set(self.alerter.own_pids) if self.alerter is not None else set()

    # --- the live status line ------------------------------------------------------------------------
    def status_text(self, now: float) -> str:
        st, opts = self.st, self.opts
        rec = st.rec
        c = policy.clocks_of(rec)
        parts = [opts.name, f"attempt {rec.attempt}/{opts.max_restarts + 1}", f"up {span(now - c.run_started)}",
                 f"alive {span(now - c.last_life)} ago"]
        if opts.progress_timeout_s or rec.checkpoint:
            parts.append(f"progress {span(now - c.last_progress)} ago")
        if rec.checkpoint:
            parts.append(f"checkpoint {rec.checkpoint[:40]}")
        if st.phase is Phase.STOPPING:
            since = rec.stop_started_at if rec.stop_started_at is not None else now
            parts.append(f"stopping ({span(now - since)})")
        elif st.phase is Phase.BACKOFF and rec.restart_at is not None:
            parts.append(f"restart in {span(max(0.0, rec.restart_at - now))}")
        elif st.phase is Phase.APPROVAL and rec.approval_until is not None:
            parts.append(f"awaiting approval (hbwrap approve {opts.name}), {span(max(0.0, rec.approval_until - now))}"
                         f" left")
        elif st.phase is Phase.CHECKING and rec.check_started_at is not None:
            parts.append(f"restart check running ({span(now - rec.check_started_at)})")
        else:
            at, kind = policy.recorded_deadline(st, opts)
            if at is not None:
                parts.append(f"{kind} deadline in {span(max(0.0, at - now))}")
        return " · ".join(parts)
