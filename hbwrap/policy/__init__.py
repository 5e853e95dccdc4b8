"""Pure decisions, no I/O: the run's state machine, its deadlines, what follows an attempt, and when to wake up.

`advance(st, obs, now, opts, rng)` is the whole of supervision's judgement: it takes what the supervisor
observed at one wake-up, moves the run state `st` on (attempt phase, stopping with its grace and
fallback, back-off, lease renewal) and returns the actions for the supervisor to carry out; `wake_at`
says when something is next due. The supervisor loop and the takeover path both run through here, so a
decision is made the same way whoever makes it.

  deadlines.py  which deadline is next or due, back-off, what follows an attempt (per question)
  state.py      RunState, Observations, Action
  machine.py    advance() and wake_at(): the phases and their transitions
  gates.py      what a decided restart passes first: --restart-approval, then --restart-check (imported
                by machine.py when a restart is first planned)
"""
from hbwrap.policy.deadlines import (Clocks, backoff_delay, clocks_of, deadlines, decide, due_stall,  # noqa: F401
                                     exit_code_of, next_deadline, renew_interval_s, run_deadline_at)
from hbwrap.policy.machine import (CHECKPOINT_EVENT_SPACING_S, HANDSHAKE_TIMEOUT_S, KILL_FALLBACK_S,  # noqa: F401
                                   STATE_FLUSH_S, advance, note_state_written, recorded_deadline, resume_value,
                                   stall_detail, wake_at)
from hbwrap.policy.state import Action, At, Observations, RunState  # noqa: F401
