"""Adopting a run whose supervisor died or hung (run, watch, the keeper's replacement), and `hbwrap stop`.

Adoption rebuilds the run state from state.json and the keeper's record and hands it to the same loop
and policy a normal run uses; the first wake-up scans every byte written while nobody was reading (markers,
checkpoints, fatal lines) before anything is decided, so a takeover decides from everything.
"""
from __future__ import annotations

import os
import signal
import time

from hbwrap import procs
from hbwrap.errors import StateError
from hbwrap.jobstore import JobDir, StateDir
from hbwrap.launcher import attempt_markers
from hbwrap.lease import stderr_line
from hbwrap.model import ACTIVE_VALUES, Event, Phase, RunRecord, StallReason, Status, fmt_s
from hbwrap.options import RunOptions
from hbwrap.orphans import keeper_processes, read_record
from hbwrap.policy import RunState
from hbwrap.record import replace

KEEPER_APPEAR_WAIT_S = 2.0


def recorded_options(job: JobDir, doc: dict, state_dir: StateDir) -> RunOptions:
    try:
        opts = replace(RunOptions.from_json(doc["options"]), state_dir=str(state_dir.root))
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{job.state_file} has no usable options ({exc})") from None
    if opts.name != job.name or doc.get("name") not in (None, job.name):
        raise StateError(f"{job.state_file} is the record of another job ({opts.name!r}); not acting on it")
    return opts


def _keeper_record(job: JobDir, rec: RunRecord, any_attempt: bool = False) -> dict | None:
    try:
        keeper = job.read_keeper()
    except StateError:
        return None
    if keeper and keeper.get("run_id") == rec.run_id and (any_attempt or keeper.get("attempt") == rec.attempt):
        return keeper
    return None


def adopt(sup, doc: dict, killed_hung: int | None) -> None:
    """Take over the orphaned run recorded in `doc`: same run id, attempt, options and deadlines."""
    job = sup.job
    opts = recorded_options(job, doc, sup.state_dir)
    sup.use_options(replace(opts, quiet=opts.quiet or sup.opts.quiet, verbose=opts.verbose or sup.opts.verbose))
    now = sup.clock.mono()
    rec = RunRecord.from_doc(doc, sup.journal.wall_offset())
    previous = rec.supervisor_pid
    rec.generation += 1
    if sup.by == "keeper":
        rec.heals += 1
    st = RunState(rec, stopped_by=sup.stopped_by, host=sup.opts.host or sup.host)
    sup.st = sup.journal.st = st
    events = [e for e in job.read_events() if e.get("run_id") == rec.run_id]
    st.sigkill_noted = any(e.get("event") == Event.KILL.value and e.get("signal") == "SIGKILL"
                           and e.get("attempt") == rec.attempt for e in events)
    sup.observer.follow_recorded(rec.run_id)
    sup.observer.set_baseline(sup.observer.baseline())  # what the files hold now is what the last supervisor saw
    sup.observer.prime_repeat(rec.last_new_line_at)     # the repetition window, from the log before the cursor
    what = _adopted_phase(sup, st, now)
    if sup.opts.activity and sup.attempt.handle is not None:  # what the tree's counters grow from, from now on
        sup.incidents.sample, st.activity_wanted = sup.attempt.handle.sample(now), True
    sup.write_state()  # claims the job: a hung predecessor that wakes up now sees a newer generation
    sup.journal.start_alerts(sup.observer.output_tail)
    if sup.journal.alerter is not None:
        sup.journal.alerter.replay(events)
    sup.catch_up = True  # the first wake-up scans what was written unwatched before anything is decided
    handle = sup.attempt.handle
    sup.emit(Event.TAKEOVER, by=sup.by, previous_supervisor_pid=previous, supervisor_pid=os.getpid(),
             killed_hung_supervisor=killed_hung, detail=what, child_pid=handle.child_pid if handle else None)
    sup.say(f"took over job {opts.name} (run {rec.run_id}, attempt {rec.attempt}): {what}")


def continue_across_hosts(sup, claim) -> None:
    """--lease-url: the row's holder host died or was cut off (its lease expired, its run never ended): this
    host continues that run — a new attempt of the same run id, from the shared checkpoint."""
    prev = claim.previous
    now = sup.clock.mono()
    started = now - max(0.0, prev.server_now - prev.acquired_at) if prev is not None else now
    rec = RunRecord(name=sup.opts.name, run_id=claim.run_id, status=Status.STARTING.value,
                    generation=claim.generation, attempt=int(prev.attempt or 0) if prev is not None else 0,
                    checkpoint=claim.checkpoint, started_at=started, lease_s=sup.opts.lease_s,
                    command=list(sup.opts.command), options=sup.opts.to_json())
    st = RunState(rec, phase=Phase.LAUNCH, stopped_by=sup.stopped_by)
    sup.st = sup.journal.st = st
    sup.observer.follow_new(rec.run_id)
    sup.write_state()
    sup.journal.start_alerts(sup.observer.output_tail)
    host = prev.holder_host if prev is not None else "another host"
    what = (f"the lease of {host} expired with its run unfinished: continuing it"
            + (f" from checkpoint {claim.checkpoint}" if claim.checkpoint else ""))
    sup.emit(Event.TAKEOVER, by="run", previous_host=host, previous_generation=prev.generation if prev else None,
             supervisor_pid=os.getpid(), detail=what)
    sup.say(f"took over job {sup.opts.name} (run {rec.run_id}, attempt {rec.attempt + 1}): {what}")


def _adopted_phase(sup, st: RunState, now: float) -> str:
    """Set the phase (and the attempt handle) the adopted run is in; what it was doing, in words."""
    rec, job = st.rec, sup.job
    markers = attempt_markers(rec, sup.observer.heartbeat_path)
    if rec.status in (Status.BACKOFF.value, Status.AWAITING_APPROVAL.value):
        waiting = rec.status == Status.AWAITING_APPROVAL.value
        if waiting:
            st.phase = Phase.APPROVAL  # its deadline keeps counting: approval_until is in the record
            if rec.approval_until is None:
                rec.approval_until = now
        else:
            st.phase = Phase.BACKOFF
            if rec.restart_at is None:
                rec.restart_at = now
        _end_orphaned_check(rec)
        keeper = _keeper_record(job, rec, any_attempt=True)
        if keeper is not None:
            sup.attempt.standby = sup.launcher.adopt(rec, markers, keeper)
        return "the run's restart was waiting for approval" if waiting else "the run was waiting to restart"
    keeper = _keeper_record(job, rec)
    if keeper is None:
        # the launch was interrupted; a keeper may still be starting: never start a second one
        end = time.monotonic() + KEEPER_APPEAR_WAIT_S
        while keeper is None and keeper_processes(job) and time.monotonic() < end:
            time.sleep(0.02)
            keeper = _keeper_record(job, rec)
        if keeper is None:
            if keeper_processes(job):
                raise StateError(f"a keeper of job {rec.name} is running but has no record; not starting "
                                 f"another copy of the command")
            rec.attempt = max(0, rec.attempt - 1)  # LAUNCH starts the same attempt number again
            st.phase = Phase.LAUNCH
            return "the run was about to start an attempt"
    sup.attempt.handle = sup.launcher.adopt(rec, markers, keeper)
    reason = rec.stop_reason
    if reason:
        st.phase = Phase.STOPPING
        st.stall = StallReason(reason) if reason in {r.value for r in StallReason} else None
        st.unkept = reason == "keeper lost"
        if rec.stop_started_at is None:
            rec.stop_started_at = now
    else:
        st.phase = Phase.RUNNING
        if sup.opts.probe:
            st.next_probe_at = now + sup.opts.probe_interval_s
    if keeper.get("ended_at"):
        return "the command ended while unwatched"
    if not sup.attempt.handle.keeper_alive():
        return "the keeper died while nobody watched"
    return "the command is still running"


def _end_orphaned_check(rec: RunRecord) -> None:
    """A --restart-check its dead supervisor started is killed (its verdict is lost with that supervisor):
    after the back-off the check runs again, from the start, under the new one."""
    if rec.check_pid and procs.is_same_process(rec.check_pid, rec.check_start):
        procs.killpg_quietly(rec.check_pid, signal.SIGKILL)
    rec.check_pid = rec.check_start = rec.check_started_at = None


def watch_job(state_dir: StateDir, name: str, by: str = "watch") -> int:
    """`hbwrap watch NAME`: adopt the job's orphaned run, with the options recorded in its state."""
    from hbwrap.supervisor import Supervisor

    job = state_dir.existing_job(name)
    doc, _rec = read_record(job)
    if doc is None:
        stderr_line(f"job {name} has never run; nothing to take over")
        return 1
    return Supervisor(recorded_options(job, doc, state_dir), by=by).run(takeover_only=True)


def stop_job(state_dir: StateDir, name: str, timeout_s: float | None) -> int:
    """`hbwrap stop NAME`: ask a live supervisor to stop (SIGTERM), or stop an orphaned run ourselves."""
    from hbwrap import lease
    from hbwrap.supervisor import Supervisor

    job = state_dir.existing_job(name)
    doc, rec = read_record(job)
    if rec is None or rec.status not in ACTIVE_VALUES:
        stderr_line(f"job {name} is not running")
        return 0
    opts = recorded_options(job, doc, state_dir)
    wait_s = timeout_s if timeout_s is not None else opts.grace_s + 15.0
    end = time.monotonic() + wait_s
    pid, start = rec.supervisor_pid, rec.supervisor_start
    if procs.is_supervisor(pid, start) and not lease.lease_expired(doc, time.time(), opts.lease_s, job):
        procs.kill_quietly(pid, signal.SIGTERM)
        while procs.is_same_process(pid, start) and time.monotonic() < end:
            time.sleep(0.02)
        if procs.is_same_process(pid, start):
            stderr_line(f"job {name} did not stop within {fmt_s(wait_s)} (supervisor pid {pid})")
            return 1
        try:
            _doc, after = read_record(job)
        except StateError:
            after = None
        if after is not None and after.status in ACTIVE_VALUES:
            # the supervisor died mid-stop (or a replacement took over): finish the job ourselves
            return stop_job(state_dir, name, max(1.0, end - time.monotonic()))
        return 0
    sup = Supervisor(replace(opts, quiet=False), by="stop", discard_output=True)  # hbwrap's lines, not the command's
    sup.signals.received.append(int(signal.SIGTERM))  # stop as soon as the run is adopted
    sup.stopped_by = "hbwrap stop; it had no live supervisor"
    code = sup.run(takeover_only=True)
    return 0 if code == 128 + signal.SIGTERM else 1
