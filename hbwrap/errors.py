"""The HbwrapError hierarchy: domain errors that carry their exit code, reported once at the CLI edge."""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of `hbwrap run` and `hbwrap watch` (SPEC §5)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    BUSY = 75
    STALL = 124
    INTERNAL = 125
    NOT_EXECUTABLE = 126
    NOT_FOUND = 127


class HbwrapError(Exception):
    """An error the user can act on; printed as one `hbwrap: ...` line."""

    exit_code: int = ExitCode.INTERNAL

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(HbwrapError):
    """Bad command line: exit 2."""

    exit_code = ExitCode.USAGE


class ConfigError(HbwrapError):
    """Unreadable or invalid configuration file: exit 125."""

    exit_code = ExitCode.INTERNAL


class StateError(HbwrapError):
    """Unusable state directory or unreadable job state: exit 125."""

    exit_code = ExitCode.INTERNAL


class UnknownJob(HbwrapError):
    """A command named a job that has no state: exit 1."""

    exit_code = ExitCode.FAILURE


class JobBusy(HbwrapError):
    """`--if-running fail` found a live supervisor: exit 75."""

    exit_code = ExitCode.BUSY


class LeaseStoreError(HbwrapError):
    """The shared lease store (--lease-url) cannot be used (unreachable, refused, not ours): exit 125."""

    exit_code = ExitCode.INTERNAL


class LeaseUnreachable(LeaseStoreError):
    """No connection to the lease store, or no answer in time: the lease's state is unknown."""


class LeaseSchemaError(LeaseStoreError):
    """A table of the lease table's name that is not hbwrap's (or no usable schema): nothing was written."""
