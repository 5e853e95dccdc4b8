"""The timing rules of a shared (PostgreSQL) lease: when to renew, and when a holder must stop its command.

Pure functions on one clock, no I/O and no imports of ours, so that policy code (and the keeper) can use
them without loading psycopg.

The rule (SPEC §10: a holder that cannot renew stops its command *before* the lease expires):

- Every renewal (and the acquire) returns `valid_for_s`: how long the lease is still valid, measured on the
  database server at the end of the statement. The holder adds it to the time it SENT the request
  (`lease_clock()` read just before the call), not the time the answer came: the server's clock read
  happened after the send, so `valid_until = sent_at + valid_for_s` is never later than the real expiry,
  however slow the answer was. A renewal that fails or hangs changes nothing: `valid_until` stays the
  last one known.
- Renew every `lease/3` after the last successful renewal was sent (`renew_due_at`); after a failure,
  retry every `retry_interval_s(lease)` (1 s at the default lease) on a fresh connection.
- A holder without a successful renewal by `must_stop_at(valid_until, lease) = valid_until - margin`,
  `margin = max(lease/6, 2 s)`, starts stopping its command (the kill signal); it sends SIGKILL no later
  than `must_kill_at(valid_until, lease) = valid_until - margin/2`, whatever `--grace` says, then records
  `lease_lost`, exits 75 and starts nothing. Its keeper applies the same two instants when the supervisor
  is hung (the supervisor hands it `valid_until`; `lease_clock` is system-wide, so the number means the
  same in both processes).
- One database operation is bounded by `op_timeout_s(lease)` (5 s at the default lease) on the client
  side, so at the default 30 s lease a holder gets three tries (at +10, +16, +22 s) before it must stop at
  +25 s, SIGKILLs by +27.5 s, and the row expires at +30 s.
- The next holder takes the row only when the server's `now()` has passed `expires_at`, so the exclusion
  holds if the server's clock runs at the rate of the holder's (any NTP slew does) and is not stepped
  forward by more than the margin; the holders' own wall clocks never matter.

`lease_clock` is CLOCK_BOOTTIME: unlike CLOCK_MONOTONIC it keeps counting while the host is suspended, so a
laptop or VM that sleeps through its lease wakes up knowing the lease is gone.

At the default 30 s lease a job costs the database 6 renew statements a minute (a checkpoint rides along
with the renewal), plus the acquire and the release of each run.
"""
from __future__ import annotations

import time

RENEWS_PER_LEASE = 3      # renew every lease/3 (SPEC §3 --lease)
MIN_MARGIN_S = 2.0        # start stopping the command at least this long before the lease expires
MAX_OP_TIMEOUT_S = 5.0    # the client-side bound of one database operation
MIN_OP_TIMEOUT_S = 1.0
MAX_RETRY_S = 1.0
MIN_RETRY_S = 0.2


def lease_clock() -> float:
    """Seconds on CLOCK_BOOTTIME (Linux): monotonic, system-wide, and counting through suspend."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def renew_interval_s(lease_s: float) -> float:
    """Every lease/3, and at least twice before a holder would have to stop (short leases)."""
    return min(lease_s / RENEWS_PER_LEASE, (lease_s - stop_margin_s(lease_s)) / 2)


def retry_interval_s(lease_s: float) -> float:
    """Pause between a failed renewal and the next try: lease/30 within [0.2 s, 1 s]."""
    return min(MAX_RETRY_S, max(MIN_RETRY_S, lease_s / 30))


def stop_margin_s(lease_s: float) -> float:
    """How long before the last known expiry a holder without a renewal starts stopping its command:
    lease/6, at least 2 s — but never more than a third of a short lease, which must leave time to renew."""
    return max(lease_s / 6, min(MIN_MARGIN_S, lease_s / 3))


def op_timeout_s(lease_s: float) -> float:
    """Client-side bound of one database operation: lease/6 within [1 s, 5 s]."""
    return min(MAX_OP_TIMEOUT_S, max(MIN_OP_TIMEOUT_S, lease_s / 6))


def valid_until(sent_at: float, valid_for_s: float) -> float:
    """The last instant (lease clock) the lease is known valid, from a successful acquire or renewal."""
    return sent_at + valid_for_s


def renew_due_at(last_ok_sent_at: float, lease_s: float, last_failed_at: float | None = None) -> float:
    """When the next renewal should be sent: lease/3 after the last success was sent, or, when a try
    failed since then, a retry interval after that failure ended."""
    if last_failed_at is not None and last_failed_at >= last_ok_sent_at:
        return last_failed_at + retry_interval_s(lease_s)
    return last_ok_sent_at + renew_interval_s(lease_s)


def must_stop_at(last_valid_until: float, lease_s: float) -> float:
    """Without a successful renewal by then, start stopping the command (its kill signal)."""
    return last_valid_until - stop_margin_s(lease_s)


def must_kill_at(last_valid_until: float, lease_s: float) -> float:
    """The command's tree must have had SIGKILL by then, whatever its --grace: half the margin remains."""
    return last_valid_until - stop_margin_s(lease_s) / 2
