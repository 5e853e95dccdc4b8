"""`hbwrap metrics`: every job's status rows and events as Prometheus text for node_exporter's textfile collector."""
from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

from hbwrap.errors import HbwrapError
from hbwrap.model import EVENT_NAMES, Status, StallReason

METRICS_MODE = 0o644  # node_exporter usually runs as another user and must read the file
JOB_LABEL = "job_name"  # not `job`: Prometheus sets that label to the scrape job
STATUS_VALUES = tuple(s.value for s in Status) + ("unreadable",)
STALL_REASONS = tuple(r.value for r in StallReason)


def _timestamp(text: object) -> float | None:
    """Seconds since the epoch from an ISO 8601 time (UTC when no offset is given), else None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _number(value: object) -> float | int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return None


def escape_label(value: object) -> str:
    """A label value for the text format: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float | int) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Family:
    """One metric family: its HELP and TYPE lines, then all its samples together (the format requires it)."""

    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[tuple[dict[str, object], float | int]] = []

    def add(self, labels: dict[str, object], value: float | int | None) -> None:
        if value is not None:
            self.samples.append((labels, value))

    def render(self) -> list[str]:
        if not self.samples:  # a family without samples is left out
            return []
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            body = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{self.name}{{{body}}} {_format_value(value)}")
        return lines


def metrics_text(jobs: Iterable[Mapping]) -> str:
    """All jobs in the Prometheus text exposition format (version 0.0.4), without sample timestamps.

    Each item is a status row (hbwrap.views.job_row) with an extra `events` key: the job's events.
    Unknown values (a job that never ran, an unreadable state) leave their series out, except the
    status state set and hbwrap_supervisor_up, which every job has.
    """
    fam = {
        "start": _Family("hbwrap_last_run_start_timestamp_seconds", "gauge",
                         "When the job's current or last run started, in seconds since the epoch."),
        "end": _Family("hbwrap_last_run_end_timestamp_seconds", "gauge",
                       "When the job's last run ended, in seconds since the epoch."),
        "exit": _Family("hbwrap_last_exit_code", "gauge",
                        "Exit code of the job's last finished run."),
        "status": _Family("hbwrap_status", "gauge",
                          "The job's status as a state set: 1 for the current status, 0 for the others."),
        "attempt": _Family("hbwrap_run_attempts", "gauge",
                           "Attempts started in the job's current or last run (1 + restarts)."),
        "restarts": _Family("hbwrap_run_restarts", "gauge",
                            "Restarts in the job's current or last run."),
        "stalls": _Family("hbwrap_stalls_total", "counter",
                          "Stalls of the job by reason (response, progress, timeout, probe, deadline), "
                          "counted from its event log."),
        "events": _Family("hbwrap_events_total", "counter",
                          "Events in the job's event log, by event name."),
        "progress": _Family("hbwrap_last_progress_timestamp_seconds", "gauge",
                            "When the job last made progress, in seconds since the epoch."),
        "output": _Family("hbwrap_last_output_timestamp_seconds", "gauge",
                          "When the job last wrote output, in seconds since the epoch."),
        "up": _Family("hbwrap_supervisor_up", "gauge",
                      "1 when a live hbwrap supervisor holds the job, else 0."),
        "child": _Family("hbwrap_child_up", "gauge",
                         "1 when the job's command is running, else 0."),
        "approval": _Family("hbwrap_approval_deadline_timestamp_seconds", "gauge",
                            "While a restart of the job awaits hbwrap approve/deny: when its approval window "
                            "closes, in seconds since the epoch."),
    }
    for row in sorted(jobs, key=lambda r: str(r.get("name"))):
        job = {JOB_LABEL: row.get("name")}
        fam["start"].add(job, _timestamp(row.get("started_at")))
        fam["end"].add(job, _timestamp(row.get("ended_at")))
        fam["exit"].add(job, _number(row.get("exit_code")))
        current = row.get("status") or "unreadable"
        for status in STATUS_VALUES + (() if current in STATUS_VALUES else (current,)):
            fam["status"].add({**job, "status": status}, 1 if status == current else 0)
        fam["attempt"].add(job, _number(row.get("attempt")))
        fam["restarts"].add(job, _number(row.get("restarts")))
        events = [e for e in row.get("events") or () if isinstance(e, Mapping)]
        stalls = Counter(str(e.get("reason") or "unknown") for e in events if e.get("event") == "stall")
        for reason in STALL_REASONS + tuple(sorted(set(stalls) - set(STALL_REASONS))):
            fam["stalls"].add({**job, "reason": reason}, stalls.get(reason, 0))
        seen = Counter(str(e.get("event")) for e in events if e.get("event"))
        for name in EVENT_NAMES + tuple(sorted(set(seen) - set(EVENT_NAMES))):
            fam["events"].add({**job, "event": name}, seen.get(name, 0))
        fam["progress"].add(job, _timestamp(row.get("last_progress_at")))
        fam["output"].add(job, _timestamp(row.get("last_output_at")))
        fam["up"].add(job, 1 if row.get("supervisor_pid") else 0)
        fam["child"].add(job, 1 if row.get("child_pid") else 0)
        if row.get("approval_pending"):
            fam["approval"].add(job, _timestamp(row.get("approval_until")))
    lines = [line for family in fam.values() for line in family.render()]
    return "\n".join(lines) + "\n" if lines else ""


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` so that a scraper sees the old or the new file, never half of one.

    The temporary file lives in the same directory and does not end in `.prom`, so the textfile
    collector never reads it.
    """
    from hbwrap.jobstore import write_atomic as replace_file

    path = Path(path)
    try:
        replace_file(path, text.encode("utf-8"), mode=METRICS_MODE)
    except OSError as exc:
        raise HbwrapError(f"cannot write metrics to {path}: {exc.strerror or exc}") from None
