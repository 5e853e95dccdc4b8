"""The options of `hbwrap run` as the config file and the command line name them: kinds, defaults, placement.

Pure data, imported on every `hbwrap run`: the fast command-line reader (runargs.py), the merge
(config_merge.py) and the file loader (configfile.py) all read these tables.
"""
from __future__ import annotations

from hbwrap.options import DEFAULT_PROGRESS_PATTERN, DEFAULT_RETRY_AFTER_PATTERN

# Every long option of `hbwrap run` that a config table may hold (dashes form) -> the kind of its value.
# Kinds: duration, size, count, signal, string, path, regex-list, string-list, bool, choice:A|B|C,
# exit-codes, event-list (a comma list or an array of event names, or "all"), activity-list (cpu, io),
# command (array of strings). Their checks are in config_values.py.
RUN_KEYS: dict[str, str] = {
    "command": "command",
    "state-dir": "path",
    "timeout": "duration",
    "deadline": "duration",
    "response-timeout": "duration",
    "progress-timeout": "duration",
    "start-grace": "duration",
    "progress-pattern": "regex-list",
    "checkpoint-file": "path",
    "heartbeat-file": "path",
    "probe": "string",
    "probe-interval": "duration",
    "probe-timeout": "duration",
    "probe-failures": "count",
    "kill-signal": "signal",
    "grace": "duration",
    "restart": "choice:never|on-stall|on-failure",
    "max-restarts": "count",
    "backoff": "duration",
    "backoff-max": "duration",
    "retry-exit-codes": "exit-codes",
    "fatal-pattern": "regex-list",
    "resume": "bool",
    "alert-cmd": "string",
    "alert-webhook": "string-list",
    "webhook-format": "choice:json|slack|discord",
    "alert-on": "event-list",
    "ping-url": "string",
    "restart-check": "string",
    "restart-approval": "duration",
    "approval-default": "choice:restart|abort",
    "activity": "activity-list",
    "repeat-timeout": "duration",
    "dump-signal": "signal",
    "dump-wait": "duration",
    "retry-after-pattern": "regex-list",
    "lease-url": "string",
    "host": "string",
    "if-running": "choice:skip|fail|wait",
    "lease": "duration",
    "self-heal": "bool",
    "quiet": "bool",
    "verbose": "bool",
    "pty": "bool",
    "log-max-size": "size",
}

# Built-in defaults (SPEC §3) in the shape the command line passes them; None = not set.
DEFAULTS: dict[str, object] = {
    "command": None,
    "state-dir": None,
    "timeout": None,
    "deadline": None,
    "response-timeout": None,
    "progress-timeout": None,
    "start-grace": "0s",
    "progress-pattern": [DEFAULT_PROGRESS_PATTERN],
    "checkpoint-file": None,
    "heartbeat-file": None,
    "probe": None,
    "probe-interval": "30s",
    "probe-timeout": "10s",
    "probe-failures": 3,
    "kill-signal": "TERM",
    "grace": "10s",
    "restart": "on-stall",
    "max-restarts": 3,
    "backoff": "1s",
    "backoff-max": "5m",
    "retry-exit-codes": None,
    "fatal-pattern": [],
    "resume": True,
    "alert-cmd": None,
    "alert-webhook": [],
    "webhook-format": "json",
    "alert-on": "stall,escalate,takeover,restart_pending",
    "ping-url": None,
    "restart-check": None,
    "restart-approval": None,
    "approval-default": "abort",
    "activity": None,
    "repeat-timeout": None,
    "dump-signal": None,
    "dump-wait": "2s",
    "retry-after-pattern": [DEFAULT_RETRY_AFTER_PATTERN],
    "lease-url": None,
    "host": None,
    "if-running": "skip",
    "lease": "30s",
    "self-heal": True,
    "quiet": False,
    "verbose": False,
    "pty": False,
    "log-max-size": "50MB",
}

# What "not set" means, for `config show`.
UNSET_MEANS: dict[str, str] = {
    "command": "the command after --",
    "state-dir": "$HBWRAP_STATE_DIR, else $XDG_STATE_HOME/hbwrap, else ~/.local/state/hbwrap",
    "timeout": "no limit",
    "deadline": "no limit",
    "response-timeout": "no limit",
    "progress-timeout": "no limit",
    "checkpoint-file": "<job dir>/checkpoint",
    "heartbeat-file": "<job dir>/heartbeat",
    "probe": "no probe",
    "retry-exit-codes": "any non-zero",
    "alert-cmd": "none",
    "ping-url": "none",
    "restart-check": "none: restarts need no check",
    "restart-approval": "none: restarts need no approval",
    "activity": "none: only output, heartbeats and markers are signs of life",
    "repeat-timeout": "no limit",
    "dump-signal": "none",
    "lease-url": "$HBWRAP_LEASE_URL, else none: the lease is in the state dir",
    "host": "this host's name",
}

ONLY_IN_DEFAULTS = frozenset({"state-dir"})  # status/watch/stop must find every job's state without a job table
ONLY_IN_JOBS = frozenset({"command"})
NOT_IN_FILE = {
    "name": "not allowed: a job's name is its table name, [jobs.NAME]",
    "config": "not allowed in a config file",
}


def norm_key(key: str) -> str:
    """A key in the dashes form (the file may spell it with underscores)."""
    return key.replace("_", "-")
