"""The gates a decided restart passes before it is made: `--restart-approval` (a person's yes or no, or the
default when nobody answers in time) and `--restart-check` (a command that must exit 0). Pure, like the
rest of policy: no I/O, every instant passed in.

The order: the decision (the attempt ended, a restart is due) → APPROVAL (`restart_pending`; then `approved`,
`denied` or the window passing) → BACKOFF for what is left of the back-off, counted from the decision, so an
answer that comes after the back-off would have ended restarts at once → CHECKING (the check runs right
before the attempt it allows, so it sees the world as the new attempt will) → LAUNCH. A stop signal or the
run's `--deadline` ends any of these waits (machine._step_gate); a refused restart escalates with the exit
code the run would have had without restarts (`pending_exit_code`).
"""
from __future__ import annotations

from hbwrap.model import AttemptEnd, Decision, DecisionKind, Event, Phase, RunRecord, StallReason, Status
from hbwrap.options import RunOptions, signal_name
from hbwrap.policy.deadlines import run_deadline_at
from hbwrap.policy.state import (KILL_CHECK, START_CHECK, WRITE_STATE, Action, At, Observations, RunState, emit,
                                 resume_value, say)

CHECK_TIMEOUT_S = 60.0      # SPEC §3 --restart-check: a longer run is killed and escalates (reason unsafe)
CHECK_KILL_WAIT_S = 5.0     # a killed check that has not exited this much later is given up on
APPROVAL_DEFAULT_BY = "--approval-default restart"   # `approved_by` of a restart nobody answered
WAITING = {Phase.APPROVAL: "while the restart waited for approval",
           Phase.CHECKING: "while the --restart-check ran"}
VERDICTS = ("approve", "deny")


def _span(seconds: float) -> str:
    """`30m`, `1h30m`, `45s`, `2.5s`."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.2g}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs and not hours or not text else "")


def _why(end: AttemptEnd) -> str:
    return "keeper lost" if end.lost and end.stall is None else "stall" if end.stall or end.lost else "failure"


def _ended(end: AttemptEnd) -> str:
    """How the attempt ended, for the person asked to approve its restart."""
    if end.stall is not None:
        return f"the attempt stalled ({end.stall.value})"
    if end.lost:
        return "the attempt's keeper was lost"
    if end.signal is not None:
        return f"the command was killed by {signal_name(end.signal)}"
    return f"the command exited with code {end.exit_code}"


def plan_restart(st: RunState, decision: Decision, end: AttemptEnd, now: float, opts: RunOptions,
                 out: list) -> None:
    """A restart is decided at `now`: ask for approval first, or announce it (back-off, then the check)."""
    rec = st.rec
    rec.restart_at = now + decision.delay_s  # the back-off counts from the decision, whatever gates follow
    rec.pending_exit_code = decision.exit_code
    rec.pending_reason = "retry-after" if decision.reason == "retry-after" else _why(end)
    rec.pending_stall = end.stall.value if end.stall else None
    if opts.restart_approval_s:
        _ask(st, end, now, opts, out)
    else:
        announce(st, now, opts, out)


def _ask(st: RunState, end: AttemptEnd, now: float, opts: RunOptions, out: list) -> None:
    rec = st.rec
    until = now + opts.restart_approval_s
    deadline = run_deadline_at(opts, rec.started_at if rec.started_at is not None else now)
    if deadline is not None:
        until = min(until, deadline)  # nobody can approve past the run's end: the window says so
    rec.approval_until = until
    rec.status = Status.AWAITING_APPROVAL.value
    st.phase = Phase.APPROVAL
    out.append(emit(Event.RESTART_PENDING, delay_s=round(until - now, 3), approve_by=At(until),
                    host=st.host or None, approval_default=opts.approval_default, reason=rec.pending_reason,
                    restarts=rec.restarts + 1, resume_from=resume_value(st, opts), checkpoint=rec.checkpoint,
                    detail=_ended(end)))
    without = "restarts" if opts.approval_default == "restart" else "gives up"
    out.append(say(f"{_ended(end)}; restarting {opts.name} (restart {rec.restarts + 1} of {opts.max_restarts}) "
                   f"needs approval within {_span(until - now)}: run `hbwrap approve {opts.name}` to restart now "
                   f"or `hbwrap deny {opts.name}` to give up (without an answer it {without})"))
    out.append(Action(WRITE_STATE))


def announce(st: RunState, now: float, opts: RunOptions, out: list, approved_by: str | None = None) -> None:
    """The restart goes ahead: `restart` with what is left of the back-off, then BACKOFF."""
    rec = st.rec
    rec.restarts += 1
    rec.approval_until = None
    resume = resume_value(st, opts)
    delay = max(0.0, (rec.restart_at if rec.restart_at is not None else now) - now)
    rec.restart_at = now + delay
    out.append(emit(Event.RESTART, delay_s=round(delay, 3), restarts=rec.restarts, reason=rec.pending_reason,
                    resume_from=resume, approved_by=approved_by))
    out.append(say(f"restarting {opts.name} {'in ' + _span(delay) if delay > 0 else 'now'} "
                   f"(restart {rec.restarts} of {opts.max_restarts})"
                   f"{', resuming from ' + rec.checkpoint if resume else ''}"
                   f"{', if the --restart-check passes' if opts.restart_check else ''}"))
    rec.status = Status.BACKOFF.value
    st.phase = Phase.BACKOFF
    out.append(Action(WRITE_STATE))


def after_backoff(st: RunState, opts: RunOptions) -> None:
    """The back-off is over: the check, if there is one, else the next attempt."""
    st.rec.restart_at = None
    if opts.restart_check:
        st.rec.check_started_at = None
        st.check_killed = False
        st.phase = Phase.CHECKING
    else:
        clear(st.rec)
        st.phase = Phase.LAUNCH


def clear(rec: RunRecord) -> None:
    """No restart is pending any more (it was made, or the run ended)."""
    rec.pending_exit_code = rec.pending_reason = rec.pending_stall = None
    rec.approval_until = rec.check_started_at = rec.check_pid = rec.check_start = None


def refused_code(rec: RunRecord) -> int:
    return rec.pending_exit_code if rec.pending_exit_code is not None else 125


def pending_end(rec: RunRecord) -> AttemptEnd:
    """The ended attempt as far as the escalation needs it (its stall reason), also after a takeover."""
    stall = rec.pending_stall if rec.pending_stall in {r.value for r in StallReason} else None
    return AttemptEnd(stall=StallReason(stall) if stall else None)


def answer_for(rec: RunRecord, answer: dict | None) -> bool:
    """An answer counts only for the pending restart of this run and attempt, and only if given in time."""
    if not isinstance(answer, dict) or answer.get("verdict") not in VERDICTS:
        return False
    if answer.get("run_id") != rec.run_id or answer.get("attempt") != rec.attempt:
        return False
    at = answer.get("at")
    return rec.approval_until is None or not isinstance(at, (int, float)) or at <= rec.approval_until


def step_approval(st: RunState, obs: Observations, now: float, opts: RunOptions, out: list) -> Decision | None:
    """Waiting for hbwrap approve / deny: the Decision to end the run with, or None (go on or keep waiting)."""
    rec = st.rec
    answer = obs.answer
    if answer is not None:
        if answer_for(rec, answer):
            by = str(answer.get("by") or "unknown")[:200]
            if answer["verdict"] == "deny":
                out.append(emit(Event.DENIED, by=by))
                return Decision(DecisionKind.ESCALATE, refused_code(rec), "denied")
            out.append(emit(Event.APPROVED, by=by))
            announce(st, now, opts, out, approved_by=by)
            return None
        out.append(say(f"ignored an answer to a restart approval of {opts.name} that is not the pending one "
                       f"(run {str(answer.get('run_id'))[:40]}, attempt {str(answer.get('attempt'))[:12]}) "
                       f"or came after its window"))
    if now < (rec.approval_until if rec.approval_until is not None else now):
        return None
    if opts.approval_default == "restart":
        out.append(say(f"no answer to the restart approval of {opts.name} in time: restarting "
                       f"(--approval-default restart)"))
        announce(st, now, opts, out, approved_by=APPROVAL_DEFAULT_BY)
        return None
    return Decision(DecisionKind.ESCALATE, refused_code(rec), "no approval")


def _check_outcome(result: dict, killed: bool) -> tuple[bool, str]:
    """(passed, what happened) of a finished check."""
    if result.get("error"):
        return False, f"could not be started ({result['error']})"
    if killed or result.get("timed_out"):
        return False, f"ran longer than {CHECK_TIMEOUT_S:.0f}s and was killed"
    if result.get("signal") is not None:
        return False, f"was killed by {signal_name(result['signal'])}"
    code = result.get("exit_code")
    return code == 0, f"exited with code {code}"


def step_checking(st: RunState, obs: Observations, now: float, opts: RunOptions, out: list) -> Decision | None:
    """The --restart-check: start it, wait for its exit (pidfd, never a wait), or kill it at its limit."""
    rec = st.rec
    if rec.check_started_at is None:
        rec.check_started_at = now
        st.check_killed = False
        out.append(Action(START_CHECK, {"resume_from": resume_value(st, opts), "reason": rec.pending_reason,
                                        "exit_code": rec.pending_exit_code}))
        out.append(Action(WRITE_STATE))
        return None
    started = rec.check_started_at
    result = obs.check_result
    if result is None and st.check_killed and now >= started + CHECK_TIMEOUT_S + CHECK_KILL_WAIT_S:
        result = {"timed_out": True, "detail": "it did not exit even of SIGKILL"}
    if result is not None:
        passed, what = _check_outcome(result, st.check_killed)
        out.append(emit(Event.RESTART_CHECK, passed=passed, exit_code=result.get("exit_code"),
                        signal=signal_name(result["signal"]) if result.get("signal") is not None else None,
                        timed_out=bool(st.check_killed or result.get("timed_out")) or None,
                        duration_s=round(now - started, 3), output=result.get("output") or None,
                        detail=f"the --restart-check {what}"))
        rec.check_started_at = rec.check_pid = rec.check_start = None
        if passed:
            clear(rec)
            st.phase = Phase.LAUNCH
            return None
        out.append(say(f"the --restart-check of {opts.name} {what}: not restarting"))
        return Decision(DecisionKind.ESCALATE, refused_code(rec), "unsafe")
    if not st.check_killed and now >= started + CHECK_TIMEOUT_S:
        st.check_killed = True
        out.append(Action(KILL_CHECK))  # its exit, and what it printed, arrive as its result
    return None


def abandon(st: RunState, out: list) -> None:
    """The run ends while a gate waits (a stop signal, the deadline): a running check is killed."""
    if st.phase is Phase.CHECKING and st.rec.check_started_at is not None:
        out.append(Action(KILL_CHECK))


def recorded(st: RunState) -> tuple[float | None, str | None]:
    """What a gate waits for, as state.json and `status` show it (the approval's or the check's deadline)."""
    rec = st.rec
    if st.phase is Phase.APPROVAL:
        return rec.approval_until, "approval"
    if st.phase is Phase.CHECKING and rec.check_started_at is not None:
        return rec.check_started_at + CHECK_TIMEOUT_S, "restart-check"
    return None, None


def wake_times(st: RunState, now: float) -> list[float]:
    """When a gate next needs a look without any observation."""
    rec = st.rec
    if st.phase is Phase.APPROVAL:
        return [rec.approval_until if rec.approval_until is not None else now]
    if st.phase is Phase.CHECKING:
        if rec.check_started_at is None:
            return [now]
        return [rec.check_started_at + CHECK_TIMEOUT_S + (CHECK_KILL_WAIT_S if st.check_killed else 0.0)]
    return []
