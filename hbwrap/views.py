"""What the read-only commands print: status rows (text and JSON), the event timeline, the stored output."""
from __future__ import annotations

import json
import os
import sys
import time

from hbwrap import procs
from hbwrap.errors import StateError
from hbwrap.jobstore import JobDir, StateDir, iso, iter_events, open_job_file, parse_iso
from hbwrap.model import ACTIVE_STATUSES, RecordError, RunRecord, Status
from hbwrap.logfollower import LogFollower, tail_bytes
from hbwrap.output import log_position

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


def job_row(job: JobDir, now: float | None = None) -> dict:
    """The job's status row (SPEC §4 keys and a few more): its record, corrected by what is true now."""
    now = time.time() if now is None else now
    try:
        job.check()
        state = job.read_state()
        if state is not None:
            RunRecord.from_doc(state, 0.0)  # every field of the right type, or the job is unreadable
    except (StateError, RecordError) as exc:
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
    pending = state.get("status") == Status.AWAITING_APPROVAL.value
    row["approval_pending"] = pending  # also while orphaned: the takeover will hold the same window
    row["approval_until"] = state.get("approval_until") if pending else None
    if pending:
        row["approve_command"], row["deny_command"] = f"hbwrap approve {job.name}", f"hbwrap deny {job.name}"
    if row["status"] in UNFINISHED:
        _newer_than_record(job, state, row)
    deadline_at = parse_iso(row.get("next_deadline_at"))
    row["next_deadline_overdue"] = deadline_at is not None and deadline_at < now
    return row


# A run still going on by its record: only then can other files know more than the record does.
UNFINISHED = {s.value for s in ACTIVE_STATUSES} | {Status.ORPHANED.value}


def _mtime(path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _log_written_at(job: JobDir) -> float | None:
    """When the command last wrote output: the keeper appends every byte to output.log as it arrives.

    output.idx needs no look of its own: its lines are written just before the bytes they describe.
    A log still empty (just created for a first attempt) tells nothing.
    """
    try:
        st = os.stat(job.log_file)
    except OSError:
        return None
    return st.st_mtime if st.st_size > 0 else None


def _newer_than_record(job: JobDir, state: dict, row: dict) -> None:
    """Correct `row` where the keeper's record or the output log is newer than the supervisor's record.

    The supervisor writes state.json when it acts (and at least every lease/3 while it lives); a dead or
    hung one (orphaned, being replaced) writes nothing, and even a live one lags behind by up to a second.
    The keeper writes keeper.json at the start and end of each attempt, and the output log grows as the
    command prints, whoever reads it. Nothing here is signalled or
    trusted beyond display: pids are shown only when /proc confirms them.
    """
    updated_at = parse_iso(state.get("updated_at")) or _mtime(job.state_file) or 0.0
    try:
        keeper = job.read_keeper()
    except StateError:
        keeper = None
    if keeper and keeper.get("run_id") == state.get("run_id") and isinstance(keeper.get("attempt"), int):
        _apply_keeper(job, state, row, keeper, updated_at)
    written_at = _log_written_at(job)
    recorded = parse_iso(row.get("last_output_at"))
    if written_at is not None and written_at > updated_at and (recorded is None or written_at > recorded):
        row["last_output_at"] = iso(written_at)
        if row.get("next_deadline") == "response":
            _move_response_deadline(state, row, written_at)


def _apply_keeper(job: JobDir, state: dict, row: dict, keeper: dict, updated_at: float) -> None:
    recorded_attempt = int(state.get("attempt") or 0)
    attempt = keeper["attempt"]
    if attempt < recorded_attempt:
        return  # the record is about a newer attempt whose keeper has not written yet
    newer_attempt = attempt > recorded_attempt
    if not newer_attempt and (_mtime(job.keeper_file) or 0.0) <= updated_at:
        return  # the supervisor wrote after the keeper did: it knew all this
    if newer_attempt:
        row["attempt"] = attempt
        row["restarts"] = max(int(state.get("restarts") or 0), attempt - 1)
        if row.get("next_deadline") == "restart":  # the restart it announced has happened
            row["next_deadline"] = row["next_deadline_at"] = None
    child_ok = procs.is_command(keeper.get("child_pid"), keeper.get("child_start"), str(state.get("run_id")))
    row["child_pid"] = keeper.get("child_pid") if child_ok else None
    if child_ok and row["status"] in (Status.STARTING.value, Status.BACKOFF.value):
        row["status"] = Status.RUNNING.value
    for src, dst in (("exit_code", "child_exit_code"), ("exit_signal", "child_exit_signal")):
        if keeper.get(src) is not None:
            row[dst] = keeper[src]
    ended = keeper.get("exited_at") or keeper.get("ended_at")
    if isinstance(ended, (int, float)) and not child_ok:
        row["child_ended_at"] = iso(ended)


def _move_response_deadline(state: dict, row: dict, life_at: float) -> None:
    """The recorded nearest deadline was the response one, and the command has shown life since.

    The response deadline moves to (latest life + --response-timeout); the nearest deadline is then the
    earliest of it and the other deadlines the record allows to compute. Where the record lacks the
    figures, the deadline is left out rather than shown wrong.
    """
    opts = state.get("options") if isinstance(state.get("options"), dict) else {}
    response_s = opts.get("response_timeout_s")
    if not isinstance(response_s, (int, float)):
        row["next_deadline"] = row["next_deadline_at"] = None
        return
    attempt_at = parse_iso(state.get("attempt_started_at"))
    grace_s = opts.get("start_grace_s") or 0.0
    floor = attempt_at + grace_s if attempt_at is not None else 0.0
    candidates = [(max(life_at, floor) + response_s, "response")]
    progress_at = parse_iso(state.get("last_progress_at")) or attempt_at
    for kind, base, limit in (("timeout", attempt_at, opts.get("timeout_s")),
                              ("deadline", parse_iso(state.get("started_at")), opts.get("deadline_s")),
                              ("progress", max(progress_at, floor) if progress_at is not None else None,
                               opts.get("progress_timeout_s"))):
        if base is not None and isinstance(limit, (int, float)) and limit > 0:
            candidates.append((base + limit, kind))
    at, kind = min(candidates)
    row["next_deadline_at"], row["next_deadline"] = iso(at), kind


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
        except (OSError, StateError):  # an unusable job file: the row says unreadable where it matters
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
    seconds = float(round(seconds))  # 1799.7 s is 30m00s, never 29m60s
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{(seconds % 86400) // 3600:02.0f}h"


def _until(ts: str | None, kind: str | None, now: float) -> str:
    """`response in 20s`, or `restart overdue 3s` for one already past (nobody acted on it yet)."""
    t = parse_iso(ts)
    if t is None:
        return "-"
    if t < now:
        return f"{kind or 'deadline'} overdue {_span(now - t)}"
    return f"{kind or ''} in {_span(t - now)}".strip()


STATUS_ORDER = {"awaiting-approval": 0, "running": 0, "starting": 0, "backoff": 1, "orphaned": 2, "escalated": 3,
                "failed": 4, "unreadable": 5, "stopped": 6, "succeeded": 7}
STATUS_STYLE = {"awaiting-approval": "bold yellow", "running": "green", "starting": "green", "backoff": "yellow",
                "orphaned": "bold magenta",
                "escalated": "bold red", "failed": "red", "unreadable": "bold red", "stopped": "dim",
                "succeeded": "cyan"}
COLUMNS = ("JOB", "STATUS", "ATTEMPT", "PID", "UPTIME", "LAST OUTPUT", "LAST PROGRESS", "CHECKPOINT",
           "NEXT DEADLINE")


def sort_rows(rows: list[dict]) -> list[dict]:
    """Running and failing jobs first, then the rest; by name within each group."""
    return sorted(rows, key=lambda r: (STATUS_ORDER.get(r.get("status") or "", 8), r["name"]))


def status_cells(row: dict, now: float) -> tuple[str, ...]:
    attempt = "-"
    if row.get("attempt"):
        restarts = row.get("restarts") or 0
        attempt = f"{row['attempt']}" + (f" ({restarts} restart{'s' if restarts > 1 else ''})" if restarts else "")
    active = row.get("status") in {s.value for s in ACTIVE_STATUSES} | {Status.ORPHANED.value}
    started = parse_iso(row.get("started_at"))
    uptime = _span(max(0.0, now - started)) if active and started else "-"
    return (row["name"], row.get("status") or "-", attempt, str(row.get("child_pid") or "-"), uptime,
            _age(row.get("last_output_at"), now), _age(row.get("last_progress_at"), now),
            (row.get("checkpoint") or "-")[:40], _until(row.get("next_deadline_at"), row.get("next_deadline"), now))


def status_text(rows: list[dict], now: float | None = None) -> str:
    """Plain aligned columns (stdout not a terminal: scripts, cron mail)."""
    if not rows:
        return "no jobs\n"
    now = time.time() if now is None else now
    table = [COLUMNS] + [status_cells(r, now) for r in sort_rows(rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines) + "\n"


def status_table(rows: list[dict], now: float | None = None):
    """A rich Table of the jobs, status in colour."""
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    table = Table(box=None, header_style="bold", pad_edge=False)
    body = [list(status_cells(row, now)) for row in sort_rows(rows)]
    for i, col in enumerate(COLUMNS):
        header = col
        natural = max([len(header)] + [len(r[i]) for r in body])
        squeezable = col in ("CHECKPOINT", "NEXT DEADLINE", "JOB")
        table.add_column(header, no_wrap=True, overflow="ellipsis",
                         min_width=min(natural, 12) if squeezable else natural)
    for cells in body:
        cells[1] = Text(cells[1], style=STATUS_STYLE.get(cells[1], ""))
        table.add_row(*cells)
    if not rows:
        table.add_row("no jobs", *[""] * (len(COLUMNS) - 1))
    return table


def print_status(state_dir: StateDir, name: str | None, as_json: bool, watch: bool, interval_s: float = 1.0) -> None:
    if as_json:
        _write(status_json(status_rows(state_dir, name)))
        return
    if not sys.stdout.isatty():
        if watch:
            from hbwrap.errors import UsageError

            raise UsageError("status: --watch needs a terminal (use --json in scripts)")
        rows = status_rows(state_dir, name)
        _write(status_text(rows))
        _say_unreadable(rows)
        return
    from rich.console import Console

    console = Console()
    if not watch:
        rows = status_rows(state_dir, name)
        console.print(status_table(rows))
        _say_unreadable(rows)
        return
    from rich.live import Live

    with Live(status_table(status_rows(state_dir, name)), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval_s)
                live.update(status_table(status_rows(state_dir, name)), refresh=True)
        except KeyboardInterrupt:
            pass


def _say_unreadable(rows: list[dict]) -> None:
    """Why each `unreadable` job is so, one `hbwrap:` line each on stderr (the table has no room for it)."""
    for row in rows:
        if row.get("status") == "unreadable" and row.get("error"):
            sys.stderr.write(f"hbwrap: job {row['name']}: {row['error']}\n")


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
        pos = os.lstat(job.events_file).st_size
    except OSError:
        pos = 0
    while True:
        active = _job_active(job)
        for e in iter_events(job.events_file, pos):
            _write(json.dumps(e) + "\n" if as_json else format_event(e) + "\n")
        try:
            size = os.lstat(job.events_file).st_size
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
    with os.fdopen(open_job_file(path, os.O_RDONLY), "rb") as f:
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


def print_incident(job: JobDir, as_json: bool, run_id: str | None, attempt: int | None) -> int:
    """`hbwrap incident`: the latest incident (of a run, of an attempt) as text or JSON; 1 when there is none."""
    from hbwrap.incident import IncidentStore, render_text

    found = IncidentStore(job.path).find(run_id=run_id, attempt=attempt)
    if found is None:
        which = " of run " + run_id if run_id else ""
        which += f" attempt {attempt}" if attempt is not None else ""
        sys.stderr.write(f"hbwrap: job {job.name} has no incident{which}\n")
        return 1
    _write(json.dumps(found, indent=2) + "\n" if as_json else render_text(found) + "\n")
    return 0
