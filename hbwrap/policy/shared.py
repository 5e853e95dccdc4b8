"""The shared lease (--lease-url) in the state machine: when to renew it, and when it is lost.

A holder that cannot renew stops its command *before* the lease expires (SPEC §10): from the last instant
the lease is known valid (`valid_until`, on the supervisor's clock, CLOCK_BOOTTIME like the lease rules'),
it starts stopping at `must_stop_at` and SIGKILLs by `must_kill_at` (hbwrap.lease_rules), then records
lease_lost and exits 75 without starting anything; the run is left to the next holder (never released).
"""
from __future__ import annotations

from hbwrap.lease_rules import must_kill_at, must_stop_at, renew_due_at
from hbwrap.model import Event
from hbwrap.options import RunOptions
from hbwrap.policy.state import RENEW_LEASE, Action, Observations, RunState, emit, say


def lease_advance(st: RunState, obs: Observations, now: float, opts: RunOptions, out: list) -> None:
    """Fold renewal results in, order the next renewal, and notice a lease that is lost or about to be."""
    if not st.shared or st.lease_lost is not None or st.phase.value in ("closing", "done"):
        return
    for kind, value, at in obs.lease_results:
        st.lease_in_flight = False
        if kind == "ok":
            st.rec.lease_valid_until, st.lease_sent_at, st.lease_failed_at = value, at, None
            st.state_dirty = True
            out.append(Action("write_state"))  # the keeper reads valid_until there (it enforces it too)
        elif kind == "error":
            st.lease_failed_at = at
            if not st.lease_error_said:
                st.lease_error_said = True
                out.append(say(f"cannot renew the lease of {opts.name}: {value}; retrying (the command is "
                               f"stopped before the lease expires if this goes on)"))
        else:
            _lost(st, value, out)
            return
    valid_until = st.rec.lease_valid_until
    if valid_until is not None and now >= must_stop_at(valid_until, opts.lease_s):
        _lost(st, f"no renewal of the lease since it was last known valid ({opts.lease_s:g}s lease)", out)
        return
    if not st.lease_in_flight and now >= renew_at(st, opts):
        st.lease_in_flight = True
        rec = st.rec
        out.append(Action(RENEW_LEASE, {"status": rec.status, "checkpoint": rec.checkpoint, "attempt": rec.attempt}))


def renew_at(st: RunState, opts: RunOptions) -> float:
    return renew_due_at(st.lease_sent_at, opts.lease_s, st.lease_failed_at)


def _lost(st: RunState, detail: str, out: list) -> None:
    st.lease_lost = detail
    out.append(emit(Event.LEASE_LOST, detail=detail))
    out.append(say(f"lost the lease of {st.rec.name}: {detail}; stopping the command, starting nothing more "
                   f"(another host may continue the run)"))


def lease_wake_at(st: RunState, opts: RunOptions, now: float) -> list[float]:
    if not st.shared:
        return []
    if st.lease_lost is not None:
        return [must_kill_at(st.rec.lease_valid_until, opts.lease_s)] if st.rec.lease_valid_until else []
    at = [] if st.lease_in_flight else [renew_at(st, opts)]
    if st.rec.lease_valid_until is not None:
        at.append(must_stop_at(st.rec.lease_valid_until, opts.lease_s))
    return at


def kill_due(st: RunState, opts: RunOptions, now: float) -> bool:
    """The lease is lost and the command must have had SIGKILL by now, whatever --grace says."""
    valid_until = st.rec.lease_valid_until
    return st.lease_lost is not None and valid_until is not None and now >= must_kill_at(valid_until, opts.lease_s)
