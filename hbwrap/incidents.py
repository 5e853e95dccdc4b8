"""The supervisor's side of incidents: the CPU baseline kept for "share over the last minute", the record made
at the instant an attempt is stopped, and the stack dump added after --dump-wait (hbwrap.incident does the
reading of /proc and the storing, imported only when needed)."""
from __future__ import annotations

import collections

from hbwrap.jobstore import JobDir
from hbwrap.options import RunOptions

BASELINE_EVERY_S = 30.0    # a tree sample for CPU shares, at most this often (on wake-ups that happen anyway)
BASELINE_AGE_S = 60.0      # shares are over the last minute: the newest sample at least this old
FIRST_BASELINE_S = 0.25    # the first sample once an attempt has run this long: a command that ends sooner
                           # (`true`) is not held up by a walk of /proc (2 ms with 80 processes)
TAIL_BYTES = 64 * 1024     # of the attempt's output, for its last 50 lines
DUMP_BYTES = 256 * 1024    # of what was written during --dump-wait, searched for the stack dump


class Incidents:
    def __init__(self, job: JobDir, opts: RunOptions):
        self.job, self.opts = job, opts
        self.sample: dict | None = None          # an --activity sample policy asked for, not yet observed
        self.baselines: collections.deque = collections.deque(maxlen=4)
        self.next_baseline_at = 0.0
        self.dump_from: tuple[int, int] | None = None
        self.latest: dict | None = None
        self._store = None

    @property
    def store(self):
        if self._store is None:
            from hbwrap.incident import IncidentStore

            self._store = IncidentStore(self.job.path)
        return self._store

    def keep_baseline(self, handle, now: float, attempt_started_at: float | None) -> None:
        """Now and then, a sample of the running attempt's tree: the incident's CPU shares are over the last
        minute (taken on wake-ups that happen anyway: an idle supervisor stays idle)."""
        young = attempt_started_at is not None and now < attempt_started_at + FIRST_BASELINE_S
        if young or now < self.next_baseline_at:
            return
        self.next_baseline_at = now + BASELINE_EVERY_S
        sample = handle.sample(now)
        if sample is not None:
            self.baselines.append(sample)

    def _baseline(self, now: float) -> dict | None:
        old = [b for b in self.baselines if now - b.get("mono", now) >= BASELINE_AGE_S]
        return old[-1] if old else (self.baselines[0] if self.baselines else None)

    def record(self, handle, rec, fields: dict, figures: dict, observer, clock) -> dict | None:
        """The incident of the attempt being stopped: its tree, sockets, output tail, checkpoint. Never raises:
        a failure to record costs the incident, never the stop."""
        try:
            from hbwrap.incident import make_incident, summary_lines, tail_lines

            now, wall = clock.mono(), clock.wall()
            secrets = [*self.opts.alert_webhooks, *(u for u in (self.opts.ping_url, self.opts.lease_url) if u)]
            tree = handle.snapshot(self._baseline(now), now, wall, secrets) if handle is not None else None
            inc = make_incident(job=self.opts.name, run_id=rec.run_id, attempt=rec.attempt, reason=fields["reason"],
                                detail=fields.get("detail", ""), figures=figures,
                                tree=tree or {"processes": [], "roots": []},
                                output_tail=tail_lines(observer.output_tail(TAIL_BYTES)),
                                checkpoint=rec.checkpoint, at_wall=wall)
            inc["id"] = self.store.save(inc)
            inc["summary"] = summary_lines(inc)
            self.latest = inc
            return inc
        except Exception as exc:  # /proc raced, a full disk: the stop goes on without its record
            observer.note(f"could not record the incident of this stall: {type(exc).__name__}: {exc}")
            return None

    def stall(self, handle, rec, fields: dict, figures: dict, observer, clock) -> dict:
        """The fields of the stall event, with the incident recorded for it (before any signal)."""
        inc = self.record(handle, rec, fields, figures, observer, clock)
        if inc is None:
            return fields
        rec.incident = inc["id"]
        return {**fields, "incident": inc["id"], "incident_path": str(self.store.path_of(inc["id"])),
                "incident_summary": inc["summary"]}

    def take_sample(self, handle, now: float) -> None:
        """--activity: the tree's counters now, for policy at the next wake-up (zeros when unreadable)."""
        self.sample = handle.sample(now) if handle is not None else None
        if self.sample is None:
            self.sample = {"mono": now, "cpu_s": 0.0, "io_bytes": 0, "procs": {}, "unreadable": True}

    def dump(self, handle, sig: int, observer) -> None:
        """--dump-signal: to the command's main process; its dump is looked for from this log position on."""
        self.dump_from = observer.follower.position
        handle.signal_command(sig)

    def add_dump(self, observer) -> None:
        """After --dump-wait: the stack dump the command wrote since the dump signal, into the incident."""
        inc, self.latest = self.latest, None
        if inc is None:
            return
        try:
            from hbwrap.incident import stack_dump_from

            dump = stack_dump_from(observer.output_since(self.dump_from, DUMP_BYTES))
            if dump:
                inc["stack_dump"] = dump
                summary = inc.pop("summary", None)
                self.store.save(inc)
                inc["summary"] = summary
        except Exception as exc:
            observer.note(f"could not add the stack dump to the incident: {type(exc).__name__}: {exc}")
