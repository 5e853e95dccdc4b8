"""Pure answers to the questions a run asks of its deadlines: which is next, which is due, how long to back
off, and what follows an attempt that ended. No I/O, no clock: every instant is passed in."""
from __future__ import annotations

from hbwrap.model import AttemptEnd, Decision, DecisionKind, RestartMode, RunRecord, StallReason
from hbwrap.options import RunOptions
from hbwrap.record import record

TYPE_CHECKING = False  # typing's own flag without importing typing (ruff and mypy honour it)
if TYPE_CHECKING:
    import random

# when several deadlines fall due together, the one that says most about the run wins
_PRIORITY = {StallReason.DEADLINE: 0, StallReason.TIMEOUT: 1, StallReason.RESPONSE: 2, StallReason.PROGRESS: 3,
             StallReason.REPEAT: 4, StallReason.PROBE: 5}
STATE_RENEW_S = 10.0          # an idle supervisor still rewrites its record (its lease) this often


@record
class Clocks:
    """Monotonic instants (seconds) the deadlines are computed from."""

    run_started: float
    attempt_started: float
    last_life: float
    last_progress: float
    last_new_line: float | None = None   # --repeat-timeout: the last line that was not a repeat ...
    last_line: float | None = None       # ... and the last line at all


def clocks_of(rec: RunRecord) -> Clocks:
    attempt = rec.attempt_started_at if rec.attempt_started_at is not None else \
        (rec.started_at if rec.started_at is not None else 0.0)
    return Clocks(rec.started_at if rec.started_at is not None else 0.0, attempt,
                  max(rec.last_life_at, attempt) if rec.last_life_at is not None else attempt,
                  max(rec.last_progress_at, attempt) if rec.last_progress_at is not None else attempt,
                  rec.last_new_line_at, rec.last_line_at)


def _enabled(value: float | None) -> bool:
    return value is not None and value > 0


def deadlines(opts: RunOptions, clocks: Clocks) -> list[tuple[float, StallReason]]:
    """Every armed deadline of the current attempt as (instant, reason)."""
    found = []
    clocks_start = clocks.attempt_started + opts.start_grace_s
    if _enabled(opts.response_timeout_s):
        found.append((max(clocks.last_life, clocks_start) + opts.response_timeout_s, StallReason.RESPONSE))
    if _enabled(opts.progress_timeout_s):
        found.append((max(clocks.last_progress, clocks_start) + opts.progress_timeout_s, StallReason.PROGRESS))
    if _enabled(opts.timeout_s):
        found.append((clocks.attempt_started + opts.timeout_s, StallReason.TIMEOUT))
    if _enabled(opts.repeat_timeout_s) and clocks.last_line is not None and clocks.last_line >= clocks_start and (
            clocks.last_new_line is None or clocks.last_line > clocks.last_new_line):
        # output that only repeats itself (silence is --response-timeout's business)
        new = clocks.last_new_line if clocks.last_new_line is not None else clocks_start
        found.append((max(new, clocks_start) + opts.repeat_timeout_s, StallReason.REPEAT))
    run_deadline = run_deadline_at(opts, clocks.run_started)
    if run_deadline is not None:
        found.append((run_deadline, StallReason.DEADLINE))
    return found


def next_deadline(opts: RunOptions, clocks: Clocks) -> tuple[float, StallReason] | None:
    found = deadlines(opts, clocks)
    return min(found, key=lambda d: (d[0], _PRIORITY[d[1]])) if found else None


def due_stall(opts: RunOptions, clocks: Clocks, now: float) -> StallReason | None:
    """The reason the attempt has stalled at `now`, or None while every deadline is still ahead."""
    due = [d for d in deadlines(opts, clocks) if d[0] <= now]
    return min(due, key=lambda d: _PRIORITY[d[1]])[1] if due else None


def run_deadline_at(opts: RunOptions, run_started: float) -> float | None:
    return run_started + opts.deadline_s if _enabled(opts.deadline_s) else None


def backoff_delay(opts: RunOptions, restart_number: int, rng: random.Random) -> float:
    """Wait before restart k (1-based): backoff × 2^(k-1), capped, with jitter keeping it in [50%, 100%]."""
    base = min(opts.backoff_s * (2 ** min(restart_number - 1, 62)), opts.backoff_max_s)
    return base * rng.uniform(0.5, 1.0)


def exit_code_of(end: AttemptEnd) -> int:
    if end.exec_error is not None:
        return end.exec_error
    if end.signal is not None:
        return 128 + end.signal
    if end.exit_code is not None:
        return end.exit_code
    return 125  # the exit status is unknown, or the command was stopped because its keeper was lost


def decide(opts: RunOptions, end: AttemptEnd, restarts_done: int, now: float, run_started: float,
           rng: random.Random) -> Decision:
    """What follows an attempt that ended as `end`, after `restarts_done` restarts in this run.

    A lost keeper is retried as a stall would be (it was not the command's failure), with exit 125 if the
    run ends there.
    """
    if end.succeeded:
        return Decision(DecisionKind.SUCCEED, 0)
    if end.exec_error is not None:
        what = "command not found" if end.exec_error == 127 else "command not executable"
        return Decision(DecisionKind.ESCALATE, end.exec_error, what)
    deadline = run_deadline_at(opts, run_started)
    if end.stall is StallReason.DEADLINE or (deadline is not None and now >= deadline):
        return Decision(DecisionKind.ESCALATE, 124, "deadline")
    if end.lost:
        code = 124 if end.stall is not None else 125
    else:
        code = 124 if end.stall is not None else exit_code_of(end)
    if end.stall is not None or end.lost:
        retryable = opts.restart in (RestartMode.ON_STALL, RestartMode.ON_FAILURE)
    else:
        retryable = opts.restart is RestartMode.ON_FAILURE and (
            opts.retry_exit_codes is None or code in opts.retry_exit_codes)
    if end.fatal:
        return Decision(DecisionKind.ESCALATE, code, "fatal")
    if retryable and restarts_done < opts.max_restarts:
        return Decision(DecisionKind.RESTART, code, "restart",
                        delay_s=backoff_delay(opts, restarts_done + 1, rng))
    if retryable:
        return Decision(DecisionKind.ESCALATE, code, "restarts exhausted")
    if end.lost:
        return Decision(DecisionKind.ESCALATE, code, "keeper lost")
    if end.stall is not None:
        return Decision(DecisionKind.ESCALATE, code, "stall")
    return Decision(DecisionKind.FAIL, code, "exit")



def renew_interval_s(opts: RunOptions) -> float:
    """How often an idle supervisor rewrites its record: at least every lease/3 (SPEC §3 --lease)."""
    return max(0.05, min(STATE_RENEW_S, opts.lease_s / 3))
