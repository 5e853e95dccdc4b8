"""Leaf module: status and event names and the small value types shared by policy, supervisor and views."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

SCHEMA_VERSION = 1


class Status(str, Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ESCALATED = "escalated"
    STOPPED = "stopped"
    ORPHANED = "orphaned"


ACTIVE_STATUSES = frozenset({Status.STARTING, Status.RUNNING, Status.BACKOFF})


class Event(str, Enum):
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


# the events of SPEC §7: what --alert-on accepts and metrics always lists
EVENT_NAMES = tuple(e.value for e in Event if e is not Event.ALERT_OUTPUT)


class StallReason(str, Enum):
    RESPONSE = "response"
    PROGRESS = "progress"
    TIMEOUT = "timeout"
    PROBE = "probe"
    DEADLINE = "deadline"


class RestartMode(str, Enum):
    NEVER = "never"
    ON_STALL = "on-stall"
    ON_FAILURE = "on-failure"


@dataclass(frozen=True)
class AttemptEnd:
    """How one attempt ended, as the policy sees it.

    Exactly one of: ``stall`` set (hbwrap stopped it for missing a deadline), ``exec_error`` set
    (126/127, the command never ran), ``exit_code`` / ``signal`` (it ended by itself), or
    ``lost`` (its keeper vanished and the exit status is unknown).
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


class DecisionKind(str, Enum):
    RESTART = "restart"
    SUCCEED = "succeed"
    FAIL = "fail"
    ESCALATE = "escalate"


@dataclass(frozen=True)
class Decision:
    """What to do once an attempt has ended."""

    kind: DecisionKind
    exit_code: int = 0
    reason: str | None = None
    delay_s: float = 0.0
