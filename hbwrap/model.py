"""Leaf module: status and event names, the run record (the one field list of state.json) and policy's value types."""
from __future__ import annotations

import time

from hbwrap.record import field, fields, record
from hbwrap.strconst import StrConst

SCHEMA_VERSION = 1


class Status(StrConst):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    AWAITING_APPROVAL = "awaiting-approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ESCALATED = "escalated"
    STOPPED = "stopped"
    ORPHANED = "orphaned"


ACTIVE_STATUSES = frozenset({Status.STARTING, Status.RUNNING, Status.BACKOFF, Status.AWAITING_APPROVAL})
ACTIVE_VALUES = frozenset(s.value for s in ACTIVE_STATUSES)


class Event(StrConst):
    RUN_START = "run_start"
    ATTEMPT_START = "attempt_start"
    CHECKPOINT = "checkpoint"
    STALL = "stall"
    KILL = "kill"
    EXIT = "exit"
    RESTART = "restart"
    SUCCESS = "success"
    FAILURE = "failure"
    ESCALATE = "escalate"
    TAKEOVER = "takeover"
    STOP = "stop"
    ALERT_FAILED = "alert_failed"
    LEASE_LOST = "lease_lost"
    RESTART_PENDING = "restart_pending"
    APPROVED = "approved"
    DENIED = "denied"
    ALERT_OUTPUT = "alert_output"  # not in SPEC §7: what a successful --alert-cmd printed (never alerted on)
    RESTART_CHECK = "restart_check"  # not in SPEC §7: how the --restart-check ended, and what it printed
    CRASH = "supervisor_crash"     # not in SPEC §7: an unexpected exception in the supervisor, with its traceback


# events of hbwrap's own, beyond SPEC §7: never alerted on, not accepted by --alert-on
OWN_EVENTS = frozenset({Event.ALERT_OUTPUT, Event.RESTART_CHECK, Event.CRASH})
# the events of SPEC §7: what --alert-on accepts and metrics always lists
EVENT_NAMES = tuple(e.value for e in Event if e not in OWN_EVENTS)


class StallReason(StrConst):
    RESPONSE = "response"
    PROGRESS = "progress"
    TIMEOUT = "timeout"
    PROBE = "probe"
    DEADLINE = "deadline"
    REPEAT = "repeat"


class RestartMode(StrConst):
    NEVER = "never"
    ON_STALL = "on-stall"
    ON_FAILURE = "on-failure"


class Phase(StrConst):
    """Where a run is in its state machine (policy.advance moves it on)."""

    LAUNCH = "launch"        # an attempt is due to start now
    STARTING = "starting"    # its keeper was started; waiting for the keeper's handshake
    RUNNING = "running"      # the attempt runs and is watched
    STOPPING = "stopping"    # the kill signal was sent; grace, then SIGKILL, then our own fallback kill
    ENDED = "ended"          # the attempt has ended: what follows is decided next
    BACKOFF = "backoff"      # waiting before the next attempt
    APPROVAL = "approval"    # --restart-approval: waiting for hbwrap approve / deny, or the approval deadline
    CHECKING = "checking"    # --restart-check: its command runs; the restart waits for its verdict
    CLOSING = "closing"      # the run is over: alerts in flight and the keeper finish, then exit
    DONE = "done"


@record(frozen=True)
class AttemptEnd:
    """How one attempt ended, as the policy sees it.

    Exactly one of: ``stall`` set (hbwrap stopped it for missing a deadline), ``exec_error`` set
    (126/127, the command never ran), ``exit_code`` / ``signal`` (it ended by itself), or
    ``lost`` (its keeper vanished: the exit status is unknown, or the command was stopped because it
    had lost its output capture).
    """

    exit_code: int | None = None
    signal: int | None = None
    stall: StallReason | None = None
    exec_error: int | None = None
    fatal: bool = False
    lost: bool = False

    @property
    def succeeded(self) -> bool:
        return self.stall is None and self.exec_error is None and not self.lost and self.exit_code == 0


class DecisionKind(StrConst):
    RESTART = "restart"
    SUCCEED = "succeed"
    FAIL = "fail"
    ESCALATE = "escalate"


@record(frozen=True)
class Decision:
    """What to do once an attempt has ended."""

    kind: DecisionKind
    exit_code: int = 0
    reason: str | None = None
    delay_s: float = 0.0


# --- the run record: state.json ------------------------------------------------------------------

class RecordError(ValueError):
    """A state.json field of the wrong type (the file is readable JSON, but not a record we can trust)."""


def fmt_s(seconds: float) -> str:
    """A duration in messages: 3 significant digits below 100 s ("1.5s", "30s"), whole seconds above."""
    return f"{seconds:.3g}s" if seconds < 100 else f"{seconds:.0f}s"


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds (truncated), or None; as datetime.fromtimestamp(ts, utc) would print it."""
    if ts is None:
        return None
    whole = float(int(ts))  # math.modf, as datetime splits a timestamp: the fraction is exact
    micros = round((ts - whole) * 1e6)  # half to even, as datetime rounds to microseconds
    if micros >= 1000000:
        whole, micros = whole + 1, micros - 1000000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1000000
    tm = time.gmtime(whole)
    if not 1 <= tm.tm_year <= 9999:
        raise ValueError(f"year {tm.tm_year} is out of range")
    return time.strftime("%Y-%m-%dT%H:%M:%S", tm) + f".{micros // 1000:03d}Z"


# what iso() writes (with any offset, 1-6 digits of fraction) is read here without datetime; any other
# spelling is read by datetime as before, so what parses, and to which instant, does not depend on this
_DAYS_BEFORE_MONTH = (0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
_EPOCH_ORDINAL = 719163  # 1970-01-01 in proleptic Gregorian day numbers (datetime.toordinal)


def _ordinal(year: int, month: int, day: int) -> int | None:
    """datetime.date(year, month, day).toordinal(), or None for a date that does not exist."""
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not (1 <= year <= 9999 and 1 <= month <= 12):
        return None
    if not 1 <= day <= (29 if month == 2 and leap else (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]):
        return None
    y = year - 1
    return y * 365 + y // 4 - y // 100 + y // 400 + _DAYS_BEFORE_MONTH[month] + (month > 2 and leap) + day


def _parse_own(text: str) -> float | None:
    """The instant of `YYYY-MM-DDTHH:MM:SS.f` + `Z`, `±HH:MM` or `±HHMM`, or None to leave `text` to datetime."""
    if text.endswith("Z"):
        body, sign, zone = text[:-1], "+", "0000"
    elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
        body, sign, zone = text[:-6], text[-6], text[-5:-3] + text[-2:]
    elif len(text) > 5 and text[-5] in "+-":
        body, sign, zone = text[:-5], text[-5], text[-4:]
    else:
        return None
    if not 21 <= len(body) <= 26 or body[4] != "-" or body[7] != "-" or body[10] != "T" or body[13] != ":" \
            or body[16] != ":" or body[19] != ".":
        return None
    parts = (body[:4], body[5:7], body[8:10], body[11:13], body[14:16], body[17:19], body[20:], zone)
    if not all(part.isascii() and part.isdigit() for part in parts):  # 0-9 only, as int() reads them
        return None
    year, month, day, hour, minute, second = (int(part) for part in parts[:6])
    ordinal = _ordinal(year, month, day)
    off_h, off_m = int(zone[:2]), int(zone[2:])
    if ordinal is None or hour > 23 or minute > 59 or second > 59 or off_h > 23 or off_m > 59:
        return None
    offset_s = (off_h * 3600 + off_m * 60) * (-1 if sign == "-" else 1)
    seconds = (ordinal - _EPOCH_ORDINAL) * 86400 + hour * 3600 + minute * 60 + second - offset_s
    return (seconds * 1000000 + int(parts[6].ljust(6, "0"))) / 1000000  # as timedelta.total_seconds()


def parse_iso(text: str | None) -> float | None:
    """The POSIX time of an ISO 8601 text (no offset: local time), None if it is not one."""
    if not text:
        return None
    if isinstance(text, str):
        ts = _parse_own(text)
        if ts is not None:
            return ts
    from datetime import datetime  # only for spellings iso() does not write

    try:
        return datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


# field kinds: how each is checked and converted at the edge
_INT, _OPT_INT, _STR, _OPT_STR, _TIME, _NUM, _OPT_NUM, _LIST, _DICT = (
    "int", "int?", "str", "str?", "time", "num", "num?", "list", "dict")


def _f(kind: str, default=None):
    return field(default=default, metadata={"kind": kind})


@record
class RunRecord:
    """What a supervisor records of its run in state.json: the one field list, read and written here only.

    Times are kept as monotonic seconds (the supervisor's clock); `to_doc` and `from_doc` convert them to
    and from ISO 8601 UTC wall times with the offset `wall - mono` of the moment. A field of the wrong
    type makes `from_doc` raise RecordError: such a record is shown as unreadable and never acted on.
    """

    name: str = _f(_STR, "")
    run_id: str = _f(_STR, "")
    status: str = _f(_STR, Status.STARTING.value)
    generation: int = _f(_INT, 0)
    attempt: int = _f(_INT, 0)
    restarts: int = _f(_INT, 0)
    heals: int = _f(_INT, 0)                 # replacements started by the keeper in this run (self-heal)
    supervisor_pid: int | None = _f(_OPT_INT)
    supervisor_start: int | None = _f(_OPT_INT)
    lease_renewed_at: float = _f(_NUM, 0.0)  # wall seconds: read by other processes (keeper, run, watch)
    lease_s: float = _f(_NUM, 30.0)
    keeper_pid: int | None = _f(_OPT_INT)
    keeper_start: int | None = _f(_OPT_INT)
    child_pid: int | None = _f(_OPT_INT)
    child_start: int | None = _f(_OPT_INT)
    checkpoint: str | None = _f(_OPT_STR)
    exit_code: int | None = _f(_OPT_INT)
    fatal_line: str | None = _f(_OPT_STR)
    exit_recorded: int | None = _f(_OPT_INT)  # the attempt whose `exit` event is written
    started_at: float | None = _f(_TIME)
    ended_at: float | None = _f(_TIME)
    attempt_started_at: float | None = _f(_TIME)
    last_life_at: float | None = _f(_TIME)
    last_output_at: float | None = _f(_TIME)
    last_progress_at: float | None = _f(_TIME)
    last_new_line_at: float | None = _f(_TIME)   # --repeat-timeout: the last line that was not a repeat
    last_line_at: float | None = _f(_TIME)       # ... and the last line at all
    retry_after_s: float | None = _f(_OPT_NUM)   # a retry-after marker of this attempt: the delay it asked for
    dump_until: float | None = _f(_TIME)         # --dump-signal: the kill signal waits for the stack dump until then
    incident: str | None = _f(_OPT_STR)          # the incident recorded when this attempt was stopped
    host: str | None = _f(_OPT_STR)              # --lease-url: this host's name in the shared lease
    lease_holder: str | None = _f(_OPT_STR)      # ... the holder id the row names (a takeover here keeps it)
    lease_valid_until: float | None = _f(_OPT_NUM)  # ... known valid until then: CLOCK_BOOTTIME, system-wide
    next_deadline_at: float | None = _f(_TIME)
    next_deadline: str | None = _f(_OPT_STR)
    restart_at: float | None = _f(_TIME)
    stop_reason: str | None = _f(_OPT_STR)
    stop_started_at: float | None = _f(_TIME)
    # a restart decided but not yet made (--restart-approval, --restart-check): what the run ends with if it is
    # refused, the answer's deadline, the check that runs (its process, to be killed by a takeover)
    pending_exit_code: int | None = _f(_OPT_INT)
    pending_reason: str | None = _f(_OPT_STR)    # why the restart: stall, failure, keeper lost
    pending_stall: str | None = _f(_OPT_STR)     # the stall reason of the attempt that ended, if it stalled
    approval_until: float | None = _f(_TIME)     # set while the restart awaits hbwrap approve / deny
    check_started_at: float | None = _f(_TIME)
    check_pid: int | None = _f(_OPT_INT)
    check_start: int | None = _f(_OPT_INT)
    updated_at: float | None = _f(_TIME)
    command: list = _f(_LIST, None)
    options: dict = _f(_DICT, None)

    def to_doc(self, offset_s: float) -> dict:
        """The JSON document, times as ISO wall times (`offset_s` = wall - mono now)."""
        doc: dict = {"schema": SCHEMA_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["kind"] == _TIME:
                value = iso(value + offset_s) if value is not None else None
            doc[f.name] = value
        return doc

    @classmethod
    def from_doc(cls, doc: dict, offset_s: float) -> "RunRecord":
        """The record of a state.json document; RecordError names the first field of the wrong type."""
        values = {}
        for f in fields(cls):
            if f.name not in doc:
                continue
            values[f.name] = _convert(f.name, f.metadata["kind"], doc[f.name], offset_s)
        return cls(**values)


def _convert(name: str, kind: str, value, offset_s: float):
    optional = kind.endswith("?") or kind in (_TIME, _LIST, _DICT)
    if value is None:
        if optional:
            return None
        raise RecordError(f"field {name!r} is missing a value")
    base = kind.rstrip("?")
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "num": isinstance(value, (int, float)) and not isinstance(value, bool),
        "time": isinstance(value, str),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
    }[base]
    if not ok:
        raise RecordError(f"field {name!r} has a value of the wrong type ({type(value).__name__})")
    if base == "time":
        ts = parse_iso(value)
        if ts is None:
            raise RecordError(f"field {name!r} is not an ISO 8601 time")
        return ts - offset_s
    if base == "num":
        return float(value)
    return value
