"""hbwrap.policy: pure decisions, driven with injected monotonic instants (seconds, ms-scale values)."""
import random

import pytest

from hbwrap import policy
from hbwrap.model import AttemptEnd, DecisionKind, RestartMode, StallReason
from hbwrap.options import RunOptions
from hbwrap.record import replace

R = StallReason


def opts(**kw) -> RunOptions:
    return RunOptions(command=("cmd",), name="job", state_dir="/nonexistent", **kw)


def clocks(run=0.0, attempt=0.0, life=None, progress=None) -> policy.Clocks:
    return policy.Clocks(run_started=run, attempt_started=attempt,
                         last_life=attempt if life is None else life,
                         last_progress=attempt if progress is None else progress)


# --- deadlines -------------------------------------------------------------------------------------

def test_nothing_armed_means_no_deadline():
    o, c = opts(), clocks()
    assert policy.deadlines(o, c) == []
    assert policy.next_deadline(o, c) is None
    assert policy.due_stall(o, c, 1e9) is None


@pytest.mark.parametrize("o, c, expected", [
    # response: last sign of life + response timeout
    (opts(response_timeout_s=0.5), clocks(attempt=10.0, life=10.2), (10.7, R.RESPONSE)),
    # progress: last progress + progress timeout
    (opts(progress_timeout_s=0.3), clocks(attempt=10.0, progress=10.1), (10.4, R.PROGRESS)),
    # timeout counts from the attempt start, whatever the output
    (opts(timeout_s=0.25), clocks(attempt=10.0, life=12.0, progress=12.0), (10.25, R.TIMEOUT)),
    # deadline counts from the run start, across attempts
    (opts(deadline_s=0.8), clocks(run=5.0, attempt=5.6), (5.8, R.DEADLINE)),
    # start grace: the response clock starts at attempt start + grace, even with no output yet
    (opts(response_timeout_s=0.1, start_grace_s=0.2), clocks(attempt=1.0), (1.3, R.RESPONSE)),
    (opts(progress_timeout_s=0.1, start_grace_s=0.2), clocks(attempt=1.0), (1.3, R.PROGRESS)),
    # ... but a sign of life after the grace counts from itself
    (opts(response_timeout_s=0.1, start_grace_s=0.2), clocks(attempt=1.0, life=1.5), (1.6, R.RESPONSE)),
    # start grace does not delay --timeout
    (opts(timeout_s=0.1, start_grace_s=0.5), clocks(attempt=1.0), (1.1, R.TIMEOUT)),
    # the earliest armed deadline is the next one
    (opts(response_timeout_s=0.5, progress_timeout_s=0.2, timeout_s=1.0), clocks(attempt=0.0), (0.2, R.PROGRESS)),
    (opts(response_timeout_s=0.5, progress_timeout_s=2.0, deadline_s=0.4), clocks(run=0.0, attempt=0.0), (0.4, R.DEADLINE)),
    # zero means "not armed"
    (opts(response_timeout_s=0.0, timeout_s=0.3), clocks(attempt=0.0), (0.3, R.TIMEOUT)),
])
def test_next_deadline(o, c, expected):
    at, reason = policy.next_deadline(o, c)
    assert reason is expected[1]
    assert at == pytest.approx(expected[0])


def test_simultaneous_deadlines_prefer_the_one_that_says_most():
    o = opts(response_timeout_s=0.5, progress_timeout_s=0.5, timeout_s=0.5, deadline_s=0.5)
    assert policy.next_deadline(o, clocks()) == (pytest.approx(0.5), R.DEADLINE)
    assert policy.due_stall(o, clocks(), 0.5) is R.DEADLINE
    o = opts(response_timeout_s=0.5, progress_timeout_s=0.5, timeout_s=0.5)
    assert policy.due_stall(o, clocks(), 0.5) is R.TIMEOUT
    o = opts(response_timeout_s=0.5, progress_timeout_s=0.5)
    assert policy.due_stall(o, clocks(), 0.6) is R.RESPONSE


@pytest.mark.parametrize("o, c, now, expected", [
    (opts(response_timeout_s=0.5), clocks(life=0.2), 0.699, None),
    (opts(response_timeout_s=0.5), clocks(life=0.2), 0.7, R.RESPONSE),   # due at the instant itself
    (opts(response_timeout_s=0.5), clocks(life=0.2), 0.9, R.RESPONSE),
    (opts(progress_timeout_s=0.3), clocks(life=5.0, progress=0.1), 0.39, None),
    (opts(progress_timeout_s=0.3), clocks(life=5.0, progress=0.1), 0.41, R.PROGRESS),  # output is not progress
    (opts(timeout_s=0.25), clocks(attempt=1.0, life=1.3, progress=1.3), 1.24, None),
    (opts(timeout_s=0.25), clocks(attempt=1.0, life=1.3, progress=1.3), 1.26, R.TIMEOUT),
    (opts(deadline_s=1.0), clocks(run=0.0, attempt=0.9), 0.99, None),
    (opts(deadline_s=1.0), clocks(run=0.0, attempt=0.9), 1.0, R.DEADLINE),
    (opts(response_timeout_s=0.1, start_grace_s=0.4), clocks(attempt=0.0), 0.45, None),   # still in grace
    (opts(response_timeout_s=0.1, start_grace_s=0.4), clocks(attempt=0.0), 0.51, R.RESPONSE),
    (opts(progress_timeout_s=0.1, start_grace_s=0.4), clocks(attempt=0.0), 0.45, None),
    (opts(progress_timeout_s=0.1, start_grace_s=0.4), clocks(attempt=0.0), 0.51, R.PROGRESS),
])
def test_due_stall(o, c, now, expected):
    assert policy.due_stall(o, c, now) is expected


def test_due_stall_prefers_deadline_over_an_earlier_response_stall():
    o = opts(response_timeout_s=0.1, deadline_s=0.3)
    assert policy.due_stall(o, clocks(), 0.35) is R.DEADLINE


# --- decide ----------------------------------------------------------------------------------------

def decide(o, end, restarts_done=0, now=1.0, run_started=0.0, seed=1):
    return policy.decide(o, end, restarts_done, now, run_started, random.Random(seed))


ON_STALL, ON_FAILURE, NEVER = RestartMode.ON_STALL, RestartMode.ON_FAILURE, RestartMode.NEVER
RESTART, SUCCEED, FAIL, ESCALATE = DecisionKind.RESTART, DecisionKind.SUCCEED, DecisionKind.FAIL, DecisionKind.ESCALATE


@pytest.mark.parametrize("mode, end, restarts_done, retry, kind, code", [
    # success ends the run, whatever the mode
    (ON_STALL, AttemptEnd(exit_code=0), 0, None, SUCCEED, 0),
    (ON_FAILURE, AttemptEnd(exit_code=0), 3, None, SUCCEED, 0),
    # stalls restart under on-stall and on-failure, never under never
    (ON_STALL, AttemptEnd(stall=R.RESPONSE, signal=15), 0, None, RESTART, 124),
    (ON_FAILURE, AttemptEnd(stall=R.PROGRESS, exit_code=143), 2, None, RESTART, 124),
    (NEVER, AttemptEnd(stall=R.TIMEOUT, signal=9), 0, None, ESCALATE, 124),
    (ON_STALL, AttemptEnd(stall=R.PROBE, signal=15), 0, None, RESTART, 124),
    # bounded restarts: the failure after the last allowed restart escalates with 124
    (ON_STALL, AttemptEnd(stall=R.RESPONSE, signal=15), 3, None, ESCALATE, 124),
    # the default mode does not retry failures: the command's own code
    (ON_STALL, AttemptEnd(exit_code=3), 0, None, FAIL, 3),
    (NEVER, AttemptEnd(exit_code=3), 0, None, FAIL, 3),
    # on-failure retries non-zero exits (any, by default) until restarts run out
    (ON_FAILURE, AttemptEnd(exit_code=3), 0, None, RESTART, 3),
    (ON_FAILURE, AttemptEnd(exit_code=3), 3, None, ESCALATE, 3),
    # --retry-exit-codes narrows what on-failure retries
    (ON_FAILURE, AttemptEnd(exit_code=3), 0, (1, 2, 75), FAIL, 3),
    (ON_FAILURE, AttemptEnd(exit_code=75), 0, (1, 2, 75), RESTART, 75),
    # ... but stalls are still retried
    (ON_FAILURE, AttemptEnd(stall=R.RESPONSE, signal=15), 0, (1,), RESTART, 124),
    # death by signal: 128+S, a failure like any other
    (ON_STALL, AttemptEnd(signal=9), 0, None, FAIL, 137),
    (NEVER, AttemptEnd(signal=11), 0, None, FAIL, 139),
    (ON_FAILURE, AttemptEnd(signal=9), 0, None, RESTART, 137),
    (ON_FAILURE, AttemptEnd(signal=9), 0, (1,), FAIL, 137),
])
def test_decide(mode, end, restarts_done, retry, kind, code):
    d = decide(opts(restart=mode, max_restarts=3, retry_exit_codes=retry), end, restarts_done)
    assert (d.kind, d.exit_code) == (kind, code), d
    if kind is RESTART:
        assert d.delay_s > 0
    else:
        assert d.delay_s == 0


@pytest.mark.parametrize("end, code", [
    (AttemptEnd(exit_code=3, fatal=True), 3),
    (AttemptEnd(signal=9, fatal=True), 137),
    (AttemptEnd(stall=R.RESPONSE, signal=15, fatal=True), 124),
])
@pytest.mark.parametrize("mode", [ON_STALL, ON_FAILURE])
def test_fatal_is_never_retried_and_escalates_with_the_commands_code(mode, end, code):
    d = decide(opts(restart=mode, max_restarts=5), end)
    assert (d.kind, d.exit_code) == (ESCALATE, code), d


@pytest.mark.parametrize("exec_error", [126, 127])
@pytest.mark.parametrize("mode", [NEVER, ON_STALL, ON_FAILURE])
def test_exec_errors_are_never_retried(mode, exec_error):
    d = decide(opts(restart=mode, max_restarts=5), AttemptEnd(exec_error=exec_error))
    assert d.kind is not RESTART
    assert d.exit_code == exec_error


@pytest.mark.parametrize("end", [
    AttemptEnd(stall=R.DEADLINE, signal=15),
    AttemptEnd(stall=R.RESPONSE, signal=15),
    AttemptEnd(exit_code=3),
    AttemptEnd(signal=9),
])
def test_deadline_passed_escalates_with_124(end):
    o = opts(restart=ON_FAILURE, max_restarts=5, deadline_s=0.5)
    d = decide(o, end, now=0.6, run_started=0.0)
    assert (d.kind, d.exit_code, d.reason) == (ESCALATE, 124, "deadline"), d


def test_deadline_not_yet_passed_still_restarts():
    o = opts(restart=ON_FAILURE, max_restarts=5, deadline_s=0.5)
    d = decide(o, AttemptEnd(exit_code=3), now=0.4, run_started=0.0)
    assert d.kind is RESTART


def test_success_after_the_deadline_is_still_success():
    d = decide(opts(deadline_s=0.5), AttemptEnd(exit_code=0), now=0.9, run_started=0.0)
    assert (d.kind, d.exit_code) == (SUCCEED, 0)


def test_restart_delay_follows_the_restart_number():
    o = opts(restart=ON_FAILURE, max_restarts=10, backoff_s=0.1, backoff_max_s=100.0)
    for done in range(6):
        d = decide(o, AttemptEnd(exit_code=1), restarts_done=done, seed=done)
        nominal = 0.1 * 2 ** done
        assert 0.5 * nominal <= d.delay_s <= nominal, (done, d)


# --- backoff ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("backoff_s, backoff_max_s", [(0.1, 300.0), (1.0, 5.0), (0.25, 0.25), (2.0, 1.0), (0.001, 1e9)])
def test_backoff_delay_stays_within_half_and_full_of_the_capped_exponential(backoff_s, backoff_max_s):
    o = opts(backoff_s=backoff_s, backoff_max_s=backoff_max_s)
    rng = random.Random(1234)
    for k in range(1, 40):
        nominal = min(backoff_s * 2 ** (k - 1), backoff_max_s)
        delays = [policy.backoff_delay(o, k, rng) for _ in range(50)]
        assert all(0.5 * nominal <= d <= nominal for d in delays), (k, nominal, min(delays), max(delays))
    # jitter actually varies
    assert len({policy.backoff_delay(o, 1, rng) for _ in range(20)}) > 1


def test_backoff_delay_is_reproducible_with_a_seeded_rng():
    o = opts(backoff_s=0.5, backoff_max_s=10.0)
    a = [policy.backoff_delay(o, k, random.Random(7)) for k in range(1, 8)]
    b = [policy.backoff_delay(o, k, random.Random(7)) for k in range(1, 8)]
    assert a == b


def test_backoff_delay_survives_huge_restart_numbers():
    o = opts(backoff_s=1.0, backoff_max_s=300.0)
    d = policy.backoff_delay(o, 10_000, random.Random(0))
    assert 150.0 <= d <= 300.0


def test_exit_code_of():
    assert policy.exit_code_of(AttemptEnd(exit_code=7)) == 7
    assert policy.exit_code_of(AttemptEnd(signal=15)) == 143
    assert policy.exit_code_of(AttemptEnd(exec_error=127)) == 127
    assert replace(AttemptEnd(), exit_code=0).succeeded
    assert not AttemptEnd(exit_code=0, stall=R.RESPONSE).succeeded
