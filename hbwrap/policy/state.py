"""The explicit state of a run as the state machine sees it, what it observes, and the actions it orders."""
from __future__ import annotations

from hbwrap.model import AttemptEnd, Event, Phase, RunRecord, StallReason
from hbwrap.record import field, record


@record
class Observations:
    """What the supervisor found at one wake-up (everything is optional)."""

    output: bool = False                   # new output bytes
    life: bool = False                     # the heartbeat file was touched
    progress: list = field(default_factory=list)  # progress: a checkpoint value each, or None for a change without one
    fatal_lines: list = field(default_factory=list)
    signals: list = field(default_factory=list)
    launched: tuple | None = None          # ("ok", pid, start) | ("exec", code, message) | ("lost", started, text)
    ended: dict | None = None              # the keeper's record, once it says the attempt's processes are gone
    keeper_gone: bool = False              # the keeper process is gone and its record does not say it ended
    command_alive: bool = False            # with keeper_gone: the command is still running, unkept
    group_gone: bool = False               # stopping an unkept group: nothing of it is left
    probe_exit: int | None = None          # the probe that finished: its exit code (-1: it timed out)
    line: bool = False                     # a line of output ended (--repeat-timeout)
    new_line: bool = False                 # ... and one of them was not a repeat of the last 1,000
    retry_after: list = field(default_factory=list)  # values of retry-after markers
    activity: dict | None = None           # a sample of the tree's CPU and I/O counters, taken when asked for
    lease_results: list = field(default_factory=list)  # shared lease: ("ok", valid_until, sent_at) |
                                           # ("error", detail, failed_at) | ("lost", detail, at)
    answer: dict | None = None             # hbwrap approve/deny: run_id, attempt, verdict, by, at (monotonic)
    check_result: dict | None = None       # the --restart-check ended: exit_code | signal | error, timed_out, output


@record(frozen=True)
class Action:
    """Something for the supervisor to do. `kind` is one of the names below; `args` what it needs."""

    kind: str
    args: dict = field(default_factory=dict)


LAUNCH, EMIT, SAY, REQUEST_STOP, FORCE_KILL, SIGNAL_GROUP, SWEEP = (
    "launch", "emit", "say", "request_stop", "force_kill", "signal_group", "sweep")
START_PROBE, KILL_PROBE, WRITE_STATE, RELEASE_KEEPER, FAIL, REPLAY_QUIET = (
    "start_probe", "kill_probe", "write_state", "release_keeper", "fail", "replay_quiet")
STALL, SAMPLE_ACTIVITY, DUMP, ADD_DUMP = "stall", "sample_activity", "dump", "add_dump"
RENEW_LEASE, RELEASE_LEASE = "renew_lease", "release_lease"
# STALL: record an incident of the attempt (before any signal), then emit the stall event naming it
START_CHECK, KILL_CHECK = "start_check", "kill_check"


class At(float):
    """A monotonic instant among an event's fields: the journal records it as an ISO 8601 wall time."""


def emit(event: Event, **fields) -> Action:
    return Action(EMIT, {"event": event, "fields": {k: v for k, v in fields.items() if v is not None}})


def say(text: str) -> Action:
    return Action(SAY, {"text": text})


@record
class RunState:
    """The explicit state of one run: its record (what state.json holds) and what lives only in memory."""

    rec: RunRecord
    phase: Phase = Phase.LAUNCH
    end: AttemptEnd | None = None          # the attempt that ended, until it is decided on
    stall: StallReason | None = None       # why the attempt is being stopped (None: a stop signal)
    sigkill_noted: bool = False
    forced: bool = False
    unkept: bool = False                   # stopping a command group whose keeper is gone: we do it ourselves
    signals: list = field(default_factory=list)
    signals_acted: int = 0
    stopped_by: str | None = None          # who asked for the stop when it was not a signal from outside
    launch_deadline: float | None = None
    launch_resume: str | None = None       # the HBWRAP_RESUME_FROM the attempt being started was given
    next_probe_at: float | None = None
    probe_started_at: float | None = None
    probe_failures: int = 0
    probe_detail: str = ""
    pending_checkpoint: str | None = None
    checkpoint_event_at: float = -1e9
    state_written_at: float = -1e9
    state_dirty: bool = False
    exit_code: int | None = None           # hbwrap's exit code once the run is over
    activity_base: dict | None = None      # --activity: the tree's counters when it last showed life
    activity_fresh: dict | None = None     # ... a sample taken at the response deadline, to compare with it
    activity_wanted: bool = False          # a sample was asked for and has not arrived yet
    activity_detail: str | None = None     # what the last comparison measured (for the stall's detail)
    shared: bool = False                   # --lease-url: the lease is a row in PostgreSQL (policy/shared.py)
    lease_sent_at: float = 0.0             # when the last successful renewal (or the acquire) was sent
    lease_failed_at: float | None = None   # when the last renewal failed, if one did since
    lease_in_flight: bool = False
    lease_error_said: bool = False
    lease_lost: str | None = None          # why the lease is lost: the command is stopped, the run left alone
    lease_killed: bool = False
    host: str = ""                         # where the run is supervised (restart_pending says it)
    check_killed: bool = False             # the --restart-check outlived its limit and was killed


def resume_value(st: RunState, opts) -> str | None:
    """The HBWRAP_RESUME_FROM the next attempt gets: the run's last checkpoint, unless --no-resume."""
    return st.rec.checkpoint if opts.resume and st.rec.checkpoint else None
