"""The renewal-deadline rule on an injected clock: a holder that cannot renew stops its command before the lease expires."""
from __future__ import annotations

import pytest

from hbwrap import lease_rules as rules


def test_the_figures_at_the_default_lease():
    lease_s = 30.0
    assert rules.renew_interval_s(lease_s) == 10
    assert rules.stop_margin_s(lease_s) == 5
    assert rules.op_timeout_s(lease_s) == 5
    assert rules.retry_interval_s(lease_s) == 1
    assert rules.must_stop_at(1000.0, lease_s) == 995
    assert rules.must_kill_at(1000.0, lease_s) == 997.5
    assert rules.valid_until(100.0, 29.99) == pytest.approx(129.99)


@pytest.mark.parametrize("lease_s, margin_s, op_s, retry_s", [
    (1.0, 1 / 3, 1.0, 0.2), (3.0, 1.0, 1.0, 0.2), (12.0, 2.0, 2.0, 0.4), (300.0, 50.0, 5.0, 1.0)])
def test_margins_and_bounds_scale_with_the_lease_within_floors(lease_s, margin_s, op_s, retry_s):
    assert rules.stop_margin_s(lease_s) == pytest.approx(margin_s)
    assert rules.op_timeout_s(lease_s) == pytest.approx(op_s)
    assert rules.retry_interval_s(lease_s) == pytest.approx(retry_s)
    assert rules.must_stop_at(50.0, lease_s) < rules.must_kill_at(50.0, lease_s) < 50.0


def test_renew_due_after_a_third_of_the_lease_and_soon_after_a_failure():
    assert rules.renew_due_at(100.0, 30.0) == 110.0
    assert rules.renew_due_at(100.0, 30.0, last_failed_at=115.0) == 116.0
    assert rules.renew_due_at(100.0, 30.0, last_failed_at=95.0) == 110.0, "a failure before the last success is over"
    assert rules.renew_due_at(100.0, 30.0, last_failed_at=100.5) == 101.5


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def holder_timeline(lease_s: float, dark_from: float, one_way_s: float, clock: FakeClock):
    """Play a holder following the rule against a server that stops answering at `dark_from`.

    Returns (when the holder starts stopping, when it SIGKILLs, when the server expires the lease,
    the renewals tried after the outage began).
    """
    start = clock.t
    sent = clock()
    server_expiry = sent + one_way_s + lease_s           # the server reads now() once the request arrives
    valid = rules.valid_until(sent, lease_s - 0.001)     # valid_for_s as measured a moment later
    last_ok, last_failed, tries_in_dark = sent, None, 0
    while True:
        due = rules.renew_due_at(last_ok, lease_s, last_failed)
        stop_at = rules.must_stop_at(valid, lease_s)
        if due >= stop_at:
            return stop_at, rules.must_kill_at(valid, lease_s), server_expiry, tries_in_dark
        clock.t = due
        sent = clock()
        if sent - start >= dark_from:
            tries_in_dark += 1
            clock.t = sent + rules.op_timeout_s(lease_s)  # no answer: the client-side bound ends the try
            last_failed = clock()
        else:
            clock.t = sent + 2 * one_way_s
            server_expiry = sent + one_way_s + lease_s
            valid = rules.valid_until(sent, lease_s - 0.001)
            last_ok = sent


@pytest.mark.parametrize("lease_s", [3.0, 6.0, 30.0, 120.0])
@pytest.mark.parametrize("dark_from", [0.0, 4.9, 10.0, 37.0])
@pytest.mark.parametrize("one_way_s", [0.001, 0.5])
def test_a_holder_that_cannot_renew_has_killed_its_command_before_the_server_expires_the_lease(lease_s, dark_from, one_way_s):
    stop_at, kill_at, server_expiry, tries = holder_timeline(lease_s, dark_from, one_way_s, FakeClock())
    assert stop_at < kill_at < server_expiry
    assert server_expiry - kill_at >= rules.stop_margin_s(lease_s) / 2
    if lease_s >= 30:
        assert tries >= 2, "a long lease survives one lost renewal and tries again before stopping"


def test_lease_clock_is_monotonic_and_counts_suspend():
    a = rules.lease_clock()
    b = rules.lease_clock()
    assert b >= a > 0


@pytest.mark.parametrize("lease_s", [1.0, 2.0, 3.0, 6.0, 30.0, 300.0])
def test_a_holder_renews_at_least_twice_before_it_would_have_to_stop(lease_s):
    # short leases too: the first renewal is due well before the instant a holder must stop
    stop_after = lease_s - rules.stop_margin_s(lease_s)
    assert stop_after > 0
    assert 2 * rules.renew_interval_s(lease_s) <= stop_after + 1e-9
