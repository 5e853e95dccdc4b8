"""What the read-only commands print: status rows (text and JSON), the event timeline, the stored output."""
from __future__ import annotations

import json
import os
import select
import sys
import time

from hbwrap import procs
from hbwrap.errors import StateError, UnknownJob
from hbwrap.jobstore import JobDir, StateDir, iso, iter_events, parse_iso
from hbwrap.model import ACTIVE_STATUSES, Status
from hbwrap.output import LogFollower, log_position, tail_bytes

FOLLOW_POLL_S = 0.25
STATUS_KEYS = ("name", "status", "attempt", "restarts", "child_pid", "supervisor_pid", "checkpoint",
               "last_output_at", "last_progress_at", "exit_code")


def supervisor_alive(state: dict) -> bool:
    return procs.is_supervisor(state.get("supervisor_pid"), state.get("supervisor_start"))


def child_alive(state: dict) -> bool:
    return procs.is_command(state.get("child_pid"), state.get("child_start"), str(state.get("run_id")))


def effective_status(state: dict) -> str:
    """The recorded status, corrected by what /proc says about the recorded (verified) processes."""
    status = state.get("status")
    if status in {s.value for s in ACTIVE_STATUSES} and not supervisor_alive(state):
        return Status.ORPHANED.value  # the run has no supervisor: `hbwrap watch` finishes it
    return status


def job_row(job: JobDir) -> dict:
    try:
        state = job.read_state()
    except StateError as exc:
        return {"name": job.name, "status": "unreadable", "error": str(exc), **{k: None for k in STATUS_KEYS[2:]}}
    if state is None:
        return {"name": job.name, "status": "never-run", **{k: None for k in STATUS_KEYS[2:]}}
    row = {key: state.get(key) for key in STATUS_KEYS}
    row["name"] = job.name
    row["status"] = effective_status(state)
    alive_sup = supervisor_alive(state)
    if not alive_sup:
        row["supervisor_pid"] = None
    if not child_alive(state):
        row["child_pid"] = None
    for key in ("run_id", "started_at", "ended_at", "next_deadline_at", "next_deadline", "command"):
        row[key] = state.get(key)
    if row["status"] not in {s.value for s in ACTIVE_STATUSES}:
        row["next_deadline_at"] = row["next_deadline"] = None
    return row


def status_rows(state_dir: StateDir, name: str | None) -> list[dict]:
    if name is not None:
        return [job_row(state_dir.existing_job(name))]
    return [job_row(state_dir.job(n)) for n in state_dir.job_names()]


def metrics_rows(state_dir: StateDir) -> list[dict]:
    """Status rows with each job's events, as hbwrap.metrics wants them."""
    rows = status_rows(state_dir, None)
    for row in rows:
        try:
            row["events"] = list(iter_events(state_dir.job(row["name"]).events_file))
        except OSError:
            row["events"] = []
    return rows


def status_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2) + "\n"


def _age(ts: str | None, now: float) -> str:
    t = parse_iso(ts)
    if t is None:
        return "-"
    return _span(max(0.0, now - t)) + " ago"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{(seconds % 86400) // 3600:02.0f}h"


def _until(ts: str | None, kind: str | None, now: float) -> str:
    t = parse_iso(ts)
    if t is None:
        return "-"
    return f"{kind or ''} in {_span(max(0.0, t - now))}".strip()


def status_text(rows: list[dict]) -> str:
    if not rows:
        return "no jobs\n"
    now = time.time()
    header = ("JOB", "STATUS", "ATTEMPT", "PID", "LAST OUTPUT", "LAST PROGRESS", "CHECKPOINT", "NEXT DEADLINE")
    table = [header]
    for r in rows:
        table.append((
            r["name"], r["status"] or "-", str(r["attempt"] or "-"), str(r["child_pid"] or "-"),
            _age(r.get("last_output_at"), now), _age(r.get("last_progress_at"), now),
            (r.get("checkpoint") or "-")[:40], _until(r.get("next_deadline_at"), r.get("next_deadline"), now),
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines) + "\n"


def format_event(e: dict) -> str:
    skip = {"ts", "job", "run_id", "attempt", "event", "reason"}
    ts = str(e.get("ts", "")).replace("T", " ").rstrip("Z")
    details = " ".join(f"{k}={json.dumps(v) if not isinstance(v, (int, float)) else v}"
                       for k, v in e.items() if k not in skip)
    reason = f" ({e['reason']})" if e.get("reason") else ""
    return f"{ts}  #{e.get('attempt', '-')}  {e.get('event', '?')}{reason}  {details}".rstrip()


def _write(text: str | bytes) -> None:
    if isinstance(text, str):
        text = text.encode()
    sys.stdout.buffer.write(text)
    sys.stdout.buffer.flush()


def _job_active(job: JobDir) -> bool:
    try:
        state = job.read_state()
    except StateError:
        return False
    return bool(state) and effective_status(state) in {s.value for s in ACTIVE_STATUSES} | {Status.ORPHANED.value}


def print_events(job: JobDir, as_json: bool, lines: int | None, follow: bool) -> None:
    events = list(iter_events(job.events_file))
    if lines is not None:
        events = events[-lines:] if lines else []
    for e in events:
        _write(json.dumps(e) + "\n" if as_json else format_event(e) + "\n")
    if not follow:
        return
    try:
        pos = os.path.getsize(job.events_file)
    except OSError:
        pos = 0
    while True:
        active = _job_active(job)
        for e in iter_events(job.events_file, pos):
            _write(json.dumps(e) + "\n" if as_json else format_event(e) + "\n")
        try:
            size = os.path.getsize(job.events_file)
        except OSError:
            size = pos
        pos = _whole_lines_end(job.events_file, pos, size)
        if not active:
            return
        time.sleep(FOLLOW_POLL_S)


def _whole_lines_end(path, start: int, size: int) -> int:
    """Offset just past the last complete line in [start, size)."""
    if size <= start:
        return start
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(size - start)
    return start + data.rfind(b"\n") + 1


def print_logs(job: JobDir, lines: int | None, follow: bool) -> None:
    if not follow:
        _write(tail_bytes(job.log_file, lines))
        return
    gen, size = log_position(job.log_file, job.index_file)
    _write(tail_bytes(job.log_file, lines if lines is not None else 10))
    follower = LogFollower(job.log_file, job.index_file, gen, size)
    while True:
        active = _job_active(job)
        while True:
            pieces = follower.read()
            if not pieces:
                break
            for _stream, data in pieces:
                _write(data)
        if not active:
            return
        time.sleep(FOLLOW_POLL_S)
