"""The run's state machine: `advance` moves a run on from one wake-up's observations and returns the actions;
`wake_at` says when something is next due. Pure: no I/O, every instant is passed in (monotonic seconds)."""
from __future__ import annotations


from hbwrap.model import (AttemptEnd, Decision, DecisionKind, Event, Phase, RunRecord, StallReason, Status,
                          fmt_s)
from hbwrap.options import RunOptions, signal_name
from hbwrap.policy.deadlines import (clocks_of, decide, due_stall, next_deadline, renew_interval_s,
                                     run_deadline_at)
from hbwrap.policy.shared import kill_due, lease_advance, lease_wake_at
from hbwrap.policy.state import (ADD_DUMP, DUMP, EMIT, FAIL, FORCE_KILL, KILL_PROBE, LAUNCH, RELEASE_KEEPER,
                                 RELEASE_LEASE, REPLAY_QUIET, REQUEST_STOP, SAMPLE_ACTIVITY, SIGNAL_GROUP, STALL,
                                 START_PROBE, SWEEP, WRITE_STATE, Action, Observations, RunState, resume_value)
from hbwrap.policy.state import emit as _emit
from hbwrap.policy.state import say as _say

TYPE_CHECKING = False  # typing's own flag without importing typing (ruff and mypy honour it)
if TYPE_CHECKING:
    import random

HANDSHAKE_TIMEOUT_S = 30.0    # a keeper that has not reported by then is abandoned
STATE_FLUSH_S = 1.0           # liveness fields reach state.json at most this late
CHECKPOINT_EVENT_SPACING_S = 0.05  # at most 20 checkpoint events a second; the latest value is never lost
KILL_FALLBACK_S = 5.0         # beyond --grace: if the keeper has not finished the kill, do it ourselves
SIGKILL = 9


def _gates():
    """gates.py, imported when a restart is first planned: an attempt that runs on never needs it."""
    from hbwrap.policy import gates

    return gates


def _run_start(rec: RunRecord, now: float) -> float:
    return rec.started_at if rec.started_at is not None else now


def stall_detail(st: RunState, reason: StallReason, now: float, opts: RunOptions) -> str:
    c = clocks_of(st.rec)
    if reason is StallReason.RESPONSE:
        if st.activity_detail:  # --activity measured the tree too
            return (f"no output and {st.activity_detail} (--response-timeout {fmt_s(opts.response_timeout_s)}, "
                    f"--activity {','.join(opts.activity)})")
        return (f"no sign of life for {fmt_s(now - c.last_life)} "
                f"(--response-timeout {fmt_s(opts.response_timeout_s)})")
    if reason is StallReason.REPEAT:
        since = c.last_new_line if c.last_new_line is not None else c.attempt_started
        return (f"no new line of output for {fmt_s(now - max(since, c.attempt_started))}: it only repeats "
                f"itself (--repeat-timeout {fmt_s(opts.repeat_timeout_s)})")
    if reason is StallReason.PROGRESS:
        return (f"no progress for {fmt_s(now - c.last_progress)} "
                f"(--progress-timeout {fmt_s(opts.progress_timeout_s)})")
    if reason is StallReason.TIMEOUT:
        return f"attempt ran for {fmt_s(now - c.attempt_started)} (--timeout {fmt_s(opts.timeout_s)})"
    if reason is StallReason.DEADLINE:
        return f"run ran for {fmt_s(now - c.run_started)} (--deadline {fmt_s(opts.deadline_s)})"
    return f"probe failed {st.probe_failures} times in a row ({st.probe_detail})"


def stall_figures(st: RunState, reason: StallReason, now: float, opts: RunOptions) -> dict:
    """The numbers of the deadline that fired, for the incident."""
    c = clocks_of(st.rec)
    limit, since = {
        StallReason.RESPONSE: (opts.response_timeout_s, c.last_life),
        StallReason.PROGRESS: (opts.progress_timeout_s, c.last_progress),
        StallReason.TIMEOUT: (opts.timeout_s, c.attempt_started),
        StallReason.DEADLINE: (opts.deadline_s, c.run_started),
        StallReason.REPEAT: (opts.repeat_timeout_s, c.last_new_line if c.last_new_line is not None
                             else c.attempt_started),
        StallReason.PROBE: (None, c.attempt_started),
    }[reason]
    figures = {"deadline": reason.value, "limit_s": limit, "elapsed_s": round(now - since, 3),
               "attempt_s": round(now - c.attempt_started, 3), "run_s": round(now - c.run_started, 3)}
    if reason is StallReason.PROBE:
        figures.update(probe_failures=st.probe_failures, probe=st.probe_detail)
    if st.activity_detail:
        figures["activity"] = st.activity_detail
    return figures


def _observe(st: RunState, obs: Observations, now: float, opts: RunOptions, out: list) -> None:
    """Fold the observations into the record: signs of life, progress, fatal lines, signals, probes."""
    rec = st.rec
    st.signals.extend(obs.signals)
    if obs.output:
        rec.last_output_at = rec.last_life_at = now
        st.state_dirty = True
    if obs.life:
        rec.last_life_at = now
        st.state_dirty = True
    for value in obs.progress:
        rec.last_progress_at = rec.last_life_at = now
        st.state_dirty = True
        if value is not None and value != rec.checkpoint:
            rec.checkpoint = value
            if now >= st.checkpoint_event_at + CHECKPOINT_EVENT_SPACING_S:
                out.append(_emit(Event.CHECKPOINT, checkpoint=value))
                st.checkpoint_event_at, st.pending_checkpoint = now, None
            else:
                st.pending_checkpoint = value  # spaced out; the latest value is never lost
    if obs.line:
        rec.last_line_at = now
        if obs.new_line:
            rec.last_new_line_at = now
    for value in obs.retry_after:
        from hbwrap.retryafter import parse_retry_after  # (only runs with retry-after markers)

        delay = parse_retry_after(str(value))
        if delay is not None:
            rec.retry_after_s = delay
            st.state_dirty = True
    if obs.activity is not None:
        st.activity_wanted = False
        if st.activity_base is None:
            st.activity_base = obs.activity
        else:
            st.activity_fresh = obs.activity
    for line in obs.fatal_lines:
        if rec.fatal_line is None:
            rec.fatal_line = line
            st.state_dirty = True
            out.append(_say(f"fatal pattern matched: {line[:200]!r}; this attempt will not be retried"))
    if obs.probe_exit is not None:
        st.probe_started_at = None
        if obs.probe_exit == 0:
            st.probe_failures = 0  # a passing probe is not a sign of life (SPEC §2): it only resets the count
        else:
            st.probe_failures += 1
            st.probe_detail = ("it timed out after " + fmt_s(opts.probe_timeout_s) if obs.probe_exit < 0
                               else f"it exited with code {obs.probe_exit}")


def advance(st: RunState, obs: Observations, now: float, opts: RunOptions, rng: random.Random) -> list[Action]:
    """Move the run on from what was observed at `now`; the actions to carry out, in order."""
    out: list[Action] = []
    if st.phase is Phase.STARTING and obs.launched is not None:
        _step_starting(st, obs, now, opts, rng, out)  # attempt_start goes before what the command printed
        obs.launched = None
    _observe(st, obs, now, opts, out)
    lease_advance(st, obs, now, opts, out)
    _stamp_attempt(out, 0, st.rec.attempt)
    steps_at, attempt_before = len(out), st.rec.attempt
    while True:
        before, mark = st.phase, len(out)
        _STEPS[st.phase](st, obs, now, opts, rng, out)
        _stamp_attempt(out, mark, st.rec.attempt)
        if st.phase is before:
            break
        obs = Observations()  # what was observed has been acted on by the phase that saw it
    if st.pending_checkpoint is not None and (
            now >= st.checkpoint_event_at + CHECKPOINT_EVENT_SPACING_S
            or any(a.kind == EMIT for a in out[steps_at:])):
        # a held-back checkpoint is recorded before whatever the phases did with it (stall, exit, escalate)
        out.insert(steps_at, _emit(Event.CHECKPOINT, checkpoint=st.pending_checkpoint))
        _stamp_attempt(out[steps_at:steps_at + 1], 0, attempt_before)
        st.pending_checkpoint = None
        st.checkpoint_event_at = now
    if st.phase not in (Phase.CLOSING, Phase.DONE) and (
            st.state_dirty and now >= st.state_written_at + STATE_FLUSH_S or
            now >= st.state_written_at + renew_interval_s(opts)):
        out.append(Action(WRITE_STATE))
    return out


def _stamp_attempt(out: list, start: int, attempt: int) -> None:
    """Events say the attempt they were emitted in, even when a later step of the same wake-up starts the next
    one before the supervisor carries them out (an approval after the back-off has passed launches at once)."""
    for action in out[start:]:
        if action.kind == EMIT:
            action.args["fields"].setdefault("attempt", attempt)


def note_state_written(st: RunState, now: float, opts: RunOptions) -> None:
    """The supervisor wrote state.json at `now`: the lease is renewed and the next deadline recorded."""
    st.state_written_at = now
    st.state_dirty = False


def recorded_deadline(st: RunState, opts: RunOptions) -> tuple[float | None, str | None]:
    """(instant, name) of what the run waits for next, as state.json and `status` show it."""
    if st.phase is Phase.RUNNING:
        found = next_deadline(opts, clocks_of(st.rec))
        return (found[0], found[1].value) if found else (None, None)
    if st.phase is Phase.BACKOFF:
        return st.rec.restart_at, "restart"
    if st.phase in (Phase.APPROVAL, Phase.CHECKING):
        return _gates().recorded(st)
    return None, None


def _ended_from_outside(st: RunState, now: float, out: list) -> bool:
    """Between attempts, a stop signal or a lost shared lease ends the run before anything else starts."""
    if st.signals:
        _finish_stopped(st, now, out)
        return True
    if st.lease_lost is not None:
        _finish_lease_lost(st, now, out)
        return True
    return False


def _step_launch(st: RunState, obs: Observations, now: float, opts: RunOptions, rng, out: list) -> None:
    rec = st.rec
    if _ended_from_outside(st, now, out):
        return
    rec.attempt += 1
    rec.attempt_started_at = now
    rec.status = Status.STARTING.value
    rec.fatal_line = rec.stop_reason = rec.stop_started_at = rec.restart_at = None
    rec.retry_after_s = rec.dump_until = rec.incident = None
    st.activity_base = st.activity_fresh = st.activity_detail = None
    rec.child_pid = rec.child_start = rec.keeper_pid = rec.keeper_start = None
    st.stall, st.end, st.sigkill_noted, st.forced, st.unkept = None, None, False, False, False
    st.probe_failures, st.probe_started_at, st.next_probe_at = 0, None, None
    st.launch_deadline = now + HANDSHAKE_TIMEOUT_S
    st.launch_resume = resume_value(st, opts)
    out.append(Action(WRITE_STATE))  # records the attempt number before its keeper exists (takeover relies on it)
    out.append(Action(LAUNCH, {"resume_from": st.launch_resume}))
    st.phase = Phase.STARTING


def _step_starting(st: RunState, obs: Observations, now: float, opts: RunOptions, rng, out: list) -> None:
    rec = st.rec
    launched = obs.launched
    if launched is None:
        return
    kind = launched[0]
    if kind == "ok":
        rec.child_pid, rec.child_start = launched[1], launched[2]
        rec.attempt_started_at = now
        rec.status = Status.RUNNING.value
        st.phase = Phase.RUNNING
        if opts.probe:
            st.next_probe_at = now + opts.start_grace_s + opts.probe_interval_s
        out.append(_emit(Event.ATTEMPT_START, child_pid=rec.child_pid, resume_from=st.launch_resume))
        if opts.activity:
            _want_activity(st, out)  # the counters at the start: what "grew" is measured from
        out.append(Action(WRITE_STATE))
        return
    if kind == "exec":
        code, message = launched[1], launched[2]
        out.append(_say(f"cannot run {opts.command[0]!r}: {message}"))
        out.append(_emit(Event.EXIT, exit_code=code, reason="not found" if code == 127 else "not executable",
                         detail=message))
        rec.exit_recorded = rec.attempt
        st.end = AttemptEnd(exec_error=code)
        st.phase = Phase.ENDED
        return
    started, text = launched[1], launched[2]
    if not started:
        out.append(Action(FAIL, {"message": f"the keeper process failed to start{': ' + text if text else ''}"}))
        st.phase = Phase.DONE
        return
    # the keeper started the command, then died before it could say so; what it started was killed
    out.append(_emit(Event.ATTEMPT_START, resume_from=st.launch_resume, detail="keeper lost while starting"))
    out.append(_say("the keeper process died while starting the command; stopped what it had started"))
    st.end = AttemptEnd(lost=True)
    st.phase = Phase.ENDED


def _want_activity(st: RunState, out: list) -> None:
    if not st.activity_wanted:
        st.activity_wanted = True
        out.append(Action(SAMPLE_ACTIVITY))


def _begin_stop(st: RunState, reason: StallReason | None, now: float, opts: RunOptions, out: list,
                cause: str = "stop") -> None:
    """Stop the attempt: for a stall, first the incident (before any signal), then --dump-signal and its
    wait if asked for, then the kill signal (through the keeper)."""
    rec = st.rec
    st.phase = Phase.STOPPING
    st.stall = reason
    rec.stop_reason = reason.value if reason else cause
    rec.stop_started_at = now
    if st.probe_started_at is not None:
        out.append(Action(KILL_PROBE))
        st.probe_started_at = None
    if reason is not None:
        detail = stall_detail(st, reason, now, opts)
        out.append(Action(STALL, {"fields": {"reason": reason.value, "detail": detail, "checkpoint": rec.checkpoint},
                                  "figures": stall_figures(st, reason, now, opts)}))
        then = f"a stack dump ({signal_name(opts.dump_signal)}), then " if opts.dump_signal else ""
        out.append(_say(f"{opts.name} stalled ({reason.value}): {detail}; stopping it with {then}"
                        f"{signal_name(opts.kill_signal)}, SIGKILL after {fmt_s(opts.grace_s)}"))
        if opts.dump_signal:
            rec.dump_until = now + opts.dump_wait_s
            out.append(Action(DUMP, {"signal": opts.dump_signal}))
            out.append(_emit(Event.KILL, signal=signal_name(opts.dump_signal), pid=rec.child_pid, reason="dump"))
            out.append(Action(WRITE_STATE))
            return
    _send_kill_signal(st, now, opts, out)


def _send_kill_signal(st: RunState, now: float, opts: RunOptions, out: list) -> None:
    rec = st.rec
    rec.dump_until = None
    rec.stop_started_at = now  # the grace counts from the kill signal
    out.append(Action(REQUEST_STOP))
    out.append(_emit(Event.KILL, signal=signal_name(opts.kill_signal), pid=rec.child_pid, reason=rec.stop_reason))
    out.append(Action(WRITE_STATE))


def _begin_unkept_stop(st: RunState, now: float, opts: RunOptions, out: list) -> None:
    """The keeper died and the command runs on without its output capture: stop its group ourselves."""
    rec = st.rec
    already = st.phase is Phase.STOPPING
    st.phase, st.unkept = Phase.STOPPING, True
    if not already:
        rec.stop_reason, rec.stop_started_at = "keeper lost", now
    started = rec.stop_started_at if rec.stop_started_at is not None else now
    sig = SIGKILL if already and now >= started + opts.grace_s else opts.kill_signal
    out.append(_say(f"the keeper of {opts.name} died while the command was running; the command lost its "
                    f"output capture, so it is stopped ({signal_name(sig)}) and the attempt counts as a stall"))
    out.append(Action(SIGNAL_GROUP, {"signal": sig}))
    out.append(_emit(Event.KILL, signal=signal_name(sig), pid=rec.child_pid, reason="keeper lost"))
    st.sigkill_noted = sig == SIGKILL
    out.append(Action(WRITE_STATE))


def _end_from_record(st: RunState, record: dict) -> AttemptEnd:
    fatal = st.rec.fatal_line is not None
    if record.get("exec_error") is not None:
        return AttemptEnd(exec_error=int(record["exec_error"]))
    code, sig = record.get("exit_code"), record.get("exit_signal")
    if code is None and sig is None:
        return AttemptEnd(lost=True, stall=st.stall, fatal=fatal)
    return AttemptEnd(exit_code=code, signal=sig, stall=st.stall, fatal=fatal)


def _attempt_ended(st: RunState, obs: Observations, now: float, out: list) -> bool:
    """React to the keeper's record saying the attempt's processes are gone; True if it did."""
    if obs.ended is None:
        return False
    if obs.ended.get("sigkill_at") and not st.sigkill_noted:
        # the keeper's SIGKILL and its exit fell in one wake-up: record the kill all the same
        st.sigkill_noted = True
        out.append(_emit(Event.KILL, signal="SIGKILL", pid=st.rec.child_pid))
    st.end = _end_from_record(st, obs.ended)
    st.phase = Phase.ENDED
    return True


def _keeper_lost(st: RunState, obs: Observations, now: float, opts: RunOptions, out: list) -> bool:
    if not obs.keeper_gone:
        return False
    if obs.command_alive and not st.unkept:
        _begin_unkept_stop(st, now, opts, out)
        return True
    if not obs.command_alive:
        out.append(Action(SWEEP, {"why": "keeper lost: escaped processes"}))
        st.end = AttemptEnd(lost=True, stall=st.stall, fatal=st.rec.fatal_line is not None)
        st.phase = Phase.ENDED
        return True
    return False


def _step_running(st: RunState, obs: Observations, now: float, opts: RunOptions, rng, out: list) -> None:
    if _attempt_ended(st, obs, now, out) or _keeper_lost(st, obs, now, opts, out):
        return
    if len(st.signals) > st.signals_acted:
        st.signals_acted = len(st.signals)
        _begin_stop(st, None, now, opts, out)
        return
    if st.lease_lost is not None:
        _begin_stop(st, None, now, opts, out, cause="lease lost")
        return
    reason = due_stall(opts, clocks_of(st.rec), now)
    if reason is StallReason.RESPONSE and opts.activity and not _judge_activity(st, now, opts, out):
        return  # the tree was busy (a sign of life now), or its counters are being read
    if reason is None and opts.probe and st.probe_failures >= opts.probe_failures:
        reason = StallReason.PROBE
    if reason is not None:
        _begin_stop(st, reason, now, opts, out)
        return
    if opts.probe:
        if st.probe_started_at is not None and now >= st.probe_started_at + opts.probe_timeout_s:
            out.append(Action(KILL_PROBE))  # its exit arrives as a probe_exit of -1
        elif st.probe_started_at is None and st.next_probe_at is not None and now >= st.next_probe_at:
            out.append(Action(START_PROBE))
            st.probe_started_at = now
            st.next_probe_at = now + opts.probe_interval_s


def _judge_activity(st: RunState, now: float, opts: RunOptions, out: list) -> bool:
    """The response deadline came with --activity: True if it is a stall, False to wait or go on.

    No periodic sampling: the tree's counters are read now and compared with those of when it last showed
    life (the attempt's start at first); if they grew enough, that was a sign of life at this instant.
    """
    if st.activity_fresh is None:
        if st.activity_base is None and st.activity_detail is None and not st.activity_wanted:
            st.activity_detail = "activity not measured"  # no sample to compare with (it could not be read)
            return True
        if st.activity_wanted or st.activity_base is None:
            return False
        _want_activity(st, out)
        return False
    base, fresh = st.activity_base, st.activity_fresh
    st.activity_fresh = None
    from hbwrap.activity import activity_alive  # (only runs with --activity)

    alive, detail = activity_alive(base, fresh, now - float(base.get("mono", now)), opts.activity)
    if alive:
        st.rec.last_life_at = now
        st.activity_base, st.activity_detail = fresh, None
        st.state_dirty = True
        return False
    st.activity_detail = detail
    return True


def _step_stopping(st: RunState, obs: Observations, now: float, opts: RunOptions, rng, out: list) -> None:
    rec = st.rec
    if _attempt_ended(st, obs, now, out):
        return
    if st.unkept:
        if obs.group_gone:
            out.append(Action(SWEEP, {"why": "keeper lost: escaped processes"}))
            st.end = AttemptEnd(lost=True, stall=st.stall, fatal=rec.fatal_line is not None)
            st.phase = Phase.ENDED
            return
    elif _keeper_lost(st, obs, now, opts, out):
        return
    if rec.dump_until is not None:
        # --dump-signal: the stack dump is being written; the kill signal follows when the wait is over, or at
        # once when hbwrap is asked to stop meanwhile
        if now < rec.dump_until and len(st.signals) <= st.signals_acted:
            return
        st.signals_acted = len(st.signals)
        out.append(Action(ADD_DUMP))
        _send_kill_signal(st, now, opts, out)
        return
    if st.lease_lost is not None and rec.dump_until is not None:
        rec.dump_until = now  # no time for a stack dump: the lease is running out
    started = rec.stop_started_at if rec.stop_started_at is not None else now
    if kill_due(st, opts, now) and not st.lease_killed:
        st.lease_killed, st.forced, st.sigkill_noted = True, True, True
        out.append(Action(SIGNAL_GROUP if st.unkept else FORCE_KILL, {"signal": SIGKILL, "why": "lease lost"}))
        out.append(_emit(Event.KILL, signal="SIGKILL", pid=rec.child_pid, reason="lease lost"))
    if len(st.signals) > st.signals_acted:
        st.signals_acted = len(st.signals)
        if len(st.signals) > 1 and not st.forced:
            st.forced = True
            out.append(Action(SIGNAL_GROUP if st.unkept else FORCE_KILL,
                              {"signal": SIGKILL, "why": "a second stop signal"}))
            if not st.sigkill_noted:
                st.sigkill_noted = True
                out.append(_emit(Event.KILL, signal="SIGKILL", pid=rec.child_pid, reason="a second stop signal"))
    if not st.sigkill_noted and now >= started + opts.grace_s:
        st.sigkill_noted = True
        if st.unkept:
            out.append(Action(SIGNAL_GROUP, {"signal": SIGKILL}))
        out.append(_emit(Event.KILL, signal="SIGKILL", pid=rec.child_pid,
                         reason="keeper lost" if st.unkept else None))
    if now >= started + opts.grace_s + KILL_FALLBACK_S:
        if st.unkept:
            # what is left of the group does not die even of SIGKILL (uninterruptible): stop waiting for it
            out.append(Action(SWEEP, {"why": "keeper lost: escaped processes"}))
            st.end = AttemptEnd(lost=True, stall=st.stall, fatal=rec.fatal_line is not None)
            st.phase = Phase.ENDED
        elif not st.forced:
            st.forced = True
            out.append(Action(FORCE_KILL, {"why": "the keeper did not finish the kill in time"}))


def _step_ended(st: RunState, obs: Observations, now: float, opts: RunOptions, rng, out: list) -> None:
    rec, end = st.rec, st.end or AttemptEnd(lost=True)
    if rec.exit_recorded != rec.attempt:
        out.append(_exit_event(end))
        rec.exit_recorded = rec.attempt
    rec.child_pid = rec.child_start = None
    rec.stop_reason = rec.stop_started_at = None
    if _ended_from_outside(st, now, out):
        return
    decision = decide(opts, end, rec.restarts, now, _run_start(rec, now), rng)
    st.end = None
    if decision.kind is not DecisionKind.RESTART:
        _finish(st, decision, end, now, opts, out)
        return
    if rec.retry_after_s is not None:
        # a rate limit said how long to wait: that instead of the back-off, unless it ends past the deadline
        deadline = run_deadline_at(opts, _run_start(rec, now))
        if deadline is not None and now + rec.retry_after_s > deadline:
            out.append(_say(f"{opts.name} asked to retry after {fmt_s(rec.retry_after_s)}, past its --deadline"))
            _finish(st, Decision(DecisionKind.ESCALATE, 124, "deadline"), end, now, opts, out)
            return
        decision = Decision(DecisionKind.RESTART, decision.exit_code, "retry-after", delay_s=rec.retry_after_s)
    _gates().plan_restart(st, decision, end, now, opts, out)  # approval, back-off, check: see gates.py


def _exit_event(end: AttemptEnd) -> Action:
    if end.exec_error is not None:
        return _emit(Event.EXIT, exit_code=end.exec_error,
                     reason="not found" if end.exec_error == 127 else "not executable")
    if end.lost:
        return _emit(Event.EXIT, reason="keeper lost",
                     detail="the keeper process died; the command was stopped or had ended, exit status unknown")
    if end.signal is not None:
        return _emit(Event.EXIT, signal=signal_name(end.signal))
    return _emit(Event.EXIT, exit_code=end.exit_code)


def _step_backoff(st: RunState, obs: Observations, now: float, opts: RunOptions, rng, out: list) -> None:
    rec = st.rec
    if _ended_from_outside(st, now, out):
        return
    restart_at = rec.restart_at if rec.restart_at is not None else now
    deadline = run_deadline_at(opts, _run_start(rec, now))
    if deadline is not None and deadline <= restart_at and now >= deadline:
        out.append(_emit(Event.STALL, reason=StallReason.DEADLINE.value, detail="--deadline passed during back-off"))
        _finish(st, Decision(DecisionKind.ESCALATE, 124, "deadline"), AttemptEnd(), now, opts, out)
        return
    if now >= restart_at:
        _gates().after_backoff(st, opts)


def _step_gate(st: RunState, obs: Observations, now: float, opts: RunOptions, rng, out: list) -> None:
    """APPROVAL and CHECKING (gates.py): a stop signal or the run's --deadline ends the wait, as in back-off."""
    rec, gates = st.rec, _gates()
    if st.signals:
        gates.abandon(st, out)
        _finish_stopped(st, now, out)
        return
    deadline = run_deadline_at(opts, _run_start(rec, now))
    if deadline is not None and now >= deadline:
        gates.abandon(st, out)
        out.append(_emit(Event.STALL, reason=StallReason.DEADLINE.value,
                         detail=f"--deadline passed {gates.WAITING[st.phase]}"))
        _finish(st, Decision(DecisionKind.ESCALATE, 124, "deadline"), gates.pending_end(rec), now, opts, out)
        return
    step = gates.step_approval if st.phase is Phase.APPROVAL else gates.step_checking
    ending = step(st, obs, now, opts, out)
    if ending is not None:
        _finish(st, ending, gates.pending_end(rec), now, opts, out)


def _finish(st: RunState, decision: Decision, end: AttemptEnd, now: float, opts: RunOptions, out: list) -> None:
    rec = st.rec
    code = decision.exit_code
    rec.exit_code, st.exit_code = code, code
    if decision.kind is DecisionKind.SUCCEED:
        out.append(_emit(Event.SUCCESS, exit_code=0, checkpoint=rec.checkpoint))
        rec.status = Status.SUCCEEDED.value
    elif decision.kind is DecisionKind.FAIL:
        out.append(_emit(Event.FAILURE, exit_code=code, reason=decision.reason, checkpoint=rec.checkpoint))
        rec.status = Status.FAILED.value
        out.append(_say(f"{opts.name} failed with exit code {code}"))
    else:
        reason = decision.reason
        out.append(_emit(Event.ESCALATE, exit_code=code, reason=reason, stall=end.stall.value if end.stall else None,
                         restarts=rec.restarts, checkpoint=rec.checkpoint,
                         fatal_line=rec.fatal_line if reason == "fatal" else None))
        rec.status = Status.ESCALATED.value
        what = {"deadline": "the run's --deadline passed", "fatal": "a --fatal-pattern matched",
                "restarts exhausted": f"restarts exhausted ({rec.restarts} of {opts.max_restarts})",
                "stall": "it stalled and --restart is never",
                "keeper lost": "its keeper was lost and --restart is never",
                "denied": "its restart was denied (hbwrap deny)",
                "no approval": "nobody approved its restart in time (--approval-default abort)",
                "unsafe": "the --restart-check did not allow the restart"}.get(reason, reason)
        out.append(_say(f"giving up on {opts.name}: {what}; exit code {code}"))
    _close_run(st, now, out, replay=code != 0)


def _finish_stopped(st: RunState, now: float, out: list) -> None:
    rec = st.rec
    signum = st.signals[0]
    code = 128 + signum
    rec.exit_code, st.exit_code = code, code
    out.append(_emit(Event.STOP, signal=signal_name(signum), exit_code=code, by=st.stopped_by))
    rec.status = Status.STOPPED.value
    how = f"({st.stopped_by})" if st.stopped_by else f"on {signal_name(signum)}"
    out.append(_say(f"stopped {rec.name} {how}"))
    _close_run(st, now, out, replay=True)


def _finish_lease_lost(st: RunState, now: float, out: list) -> None:
    """The lease was lost: the command is stopped; exit 75, start nothing, leave the run to the next holder."""
    rec = st.rec
    rec.exit_code, st.exit_code = 75, 75
    out.append(_emit(Event.STOP, reason="lease lost", exit_code=75, by="lease"))
    rec.status = Status.STOPPED.value
    _close_run(st, now, out, replay=True)


def _close_run(st: RunState, now: float, out: list, replay: bool) -> None:
    rec = st.rec
    rec.ended_at = now
    rec.child_pid = rec.child_start = rec.restart_at = None
    rec.stop_reason = rec.stop_started_at = None
    _gates().clear(rec)
    out.append(Action(WRITE_STATE))
    out.append(Action(RELEASE_KEEPER))
    if st.shared and st.lease_lost is None:  # the run is over: free the row for the next run
        out.append(Action(RELEASE_LEASE, {"status": rec.status, "checkpoint": rec.checkpoint,
                                          "attempt": rec.attempt}))
    if replay:
        out.append(Action(REPLAY_QUIET))
    st.phase = Phase.CLOSING


def _step_idle(st: RunState, obs: Observations, now: float, opts: RunOptions, rng, out: list) -> None:
    return


_STEPS = {Phase.LAUNCH: _step_launch, Phase.STARTING: _step_starting, Phase.RUNNING: _step_running,
          Phase.STOPPING: _step_stopping, Phase.ENDED: _step_ended, Phase.BACKOFF: _step_backoff,
          Phase.APPROVAL: _step_gate, Phase.CHECKING: _step_gate, Phase.CLOSING: _step_idle, Phase.DONE: _step_idle}


def wake_at(st: RunState, opts: RunOptions, now: float) -> float | None:
    """The next instant something is due (None: nothing until an observation arrives)."""
    rec = st.rec
    at: list[float] = []
    phase = st.phase
    if phase in (Phase.LAUNCH, Phase.ENDED) or st.activity_wanted:
        return now
    if phase is Phase.STARTING and st.launch_deadline is not None:
        at.append(st.launch_deadline)
    if phase is Phase.RUNNING:
        found = next_deadline(opts, clocks_of(rec))
        if found:
            at.append(found[0])
        if opts.probe:
            if st.probe_started_at is not None:
                at.append(st.probe_started_at + opts.probe_timeout_s)
            elif st.next_probe_at is not None:
                at.append(st.next_probe_at)
    if phase is Phase.STOPPING and rec.dump_until is not None:
        at.append(rec.dump_until)
    elif phase is Phase.STOPPING:
        started = rec.stop_started_at if rec.stop_started_at is not None else now
        if not st.sigkill_noted:
            at.append(started + opts.grace_s)
        at.append(started + opts.grace_s + KILL_FALLBACK_S)
    if phase is Phase.BACKOFF:
        at.append(rec.restart_at if rec.restart_at is not None else now)
    if phase in (Phase.APPROVAL, Phase.CHECKING):
        at.extend(_gates().wake_times(st, now))
    if phase in (Phase.BACKOFF, Phase.APPROVAL, Phase.CHECKING):
        deadline = run_deadline_at(opts, _run_start(rec, now))
        if deadline is not None:
            at.append(deadline)
    if st.pending_checkpoint is not None:
        at.append(st.checkpoint_event_at + CHECKPOINT_EVENT_SPACING_S)
    at.extend(lease_wake_at(st, opts, now))
    if phase not in (Phase.CLOSING, Phase.DONE):
        renew_s = renew_interval_s(opts)
        at.append(st.state_written_at + (min(STATE_FLUSH_S, renew_s) if st.state_dirty else renew_s))
    return min(at) if at else None
