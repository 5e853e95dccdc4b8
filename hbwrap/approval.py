"""Answers to a pending `--restart-approval`: `hbwrap approve` / `hbwrap deny` leave one in the job dir, and the
job's supervisor — whichever holds the run, a takeover's included — takes it from there (inotify, or its
poll fallback) and policy decides with it (policy/gates.py).

The answer names the run and the attempt it answers for, so an answer can never apply to another restart
than the one its author saw pending; it is written atomically, and taken by renaming it away first, so
two answers are never read as one and none is read twice.
"""
from __future__ import annotations

import os
import time

from hbwrap import procs
from hbwrap.errors import ExitCode, HbwrapError, StateError
from hbwrap.jobstore import JobDir, StateDir, read_json, write_json_atomic
from hbwrap.model import SCHEMA_VERSION, RecordError, RunRecord, Status, iso, parse_iso

VERDICTS = ("approve", "deny")
TAKEN_WAIT_S = 2.0     # approve/deny: how long to wait for a live supervisor to take the answer
TAKEN_POLL_S = 0.02


def who() -> str:
    """`user@host` of whoever answers (the supervisor imports this module, but never asks)."""
    import pwd

    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"uid{os.geteuid()}"
    return f"{user}@{os.uname().nodename}"  # what socket.gethostname() returns on Linux, without socket


def take_answer(job: JobDir) -> dict | None:
    """The answer waiting in the job dir, removed from it; None if there is none.

    StateError for a file there that is not a usable answer (it is removed as well): a symlink, someone
    else's file, or content of the wrong shape is never acted on.
    """
    taken = os.path.join(job.path, f".{os.path.basename(job.approval_file)}.{os.getpid()}.taken")
    try:
        os.rename(job.approval_file, taken)  # renames a planted symlink itself, never its target
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot take {job.approval_file}: {exc.strerror or exc}") from None
    try:
        doc = read_json(taken)
    finally:
        try:
            os.unlink(taken)
        except OSError:
            pass
    if doc is None or not _well_formed(doc):
        raise StateError(f"{job.approval_file} is not an answer of hbwrap approve/deny")
    return doc


def _well_formed(doc: dict) -> bool:
    attempt = doc.get("attempt")
    return (isinstance(doc.get("run_id"), str) and isinstance(attempt, int) and not isinstance(attempt, bool)
            and doc.get("verdict") in VERDICTS and isinstance(doc.get("by"), str)
            and isinstance(doc.get("ts"), str) and parse_iso(doc["ts"]) is not None)


def write_answer(job: JobDir, rec: RunRecord, verdict: str, by: str, now_wall: float) -> dict:
    """The answer file for the restart pending after attempt `rec.attempt` of run `rec.run_id`."""
    answer = {"schema": SCHEMA_VERSION, "run_id": rec.run_id, "attempt": rec.attempt, "verdict": verdict,
              "by": by, "ts": iso(now_wall)}
    try:
        write_json_atomic(job.approval_file, answer)
    except OSError as exc:
        raise StateError(f"cannot write {job.approval_file}: {exc.strerror or exc}") from None
    return answer


def _pending_record(job: JobDir, name: str, now_wall: float) -> tuple[dict, RunRecord]:
    """The job's record if a restart of it awaits an answer now; else HbwrapError (exit 1, one line)."""
    doc = job.read_state()
    if doc is None:
        raise HbwrapError(f"job {name} has never run; nothing to approve or deny", ExitCode.FAILURE)
    try:
        rec = RunRecord.from_doc(doc, 0.0)  # times as wall seconds
    except RecordError as exc:
        raise StateError(f"{job.state_file} is not a usable hbwrap state file ({exc})") from None
    if rec.status != Status.AWAITING_APPROVAL.value:
        raise HbwrapError(f"job {name} has no restart waiting for approval (status {rec.status})",
                          ExitCode.FAILURE)
    if rec.approval_until is not None and now_wall > rec.approval_until:
        default = (doc.get("options") or {}).get("approval_default", "abort")
        raise HbwrapError(f"the approval window of job {name} closed at {iso(rec.approval_until)}; "
                          f"--approval-default {default} applies", ExitCode.FAILURE)
    return doc, rec


def answer_job(state_dir: StateDir, name: str, verdict: str) -> int:
    """`hbwrap approve NAME` / `hbwrap deny NAME`: answer the pending restart; one line on stdout, exit 0."""
    job = state_dir.existing_job(name)
    _doc, rec = _pending_record(job, name, time.time())
    write_answer(job, rec, verdict, who(), time.time())
    what = f"{'approved' if verdict == 'approve' else 'denied'} the restart of job {name} after attempt " \
           f"{rec.attempt} of run {rec.run_id}" + (": it gives up (reason denied)" if verdict == "deny" else "")
    pid = rec.supervisor_pid
    if not procs.is_supervisor(pid, rec.supervisor_start):
        tail = (f"no live supervisor holds the job now: the answer applies when one takes it over "
                f"(hbwrap watch {name})")
    elif _taken(job):
        tail = f"its supervisor (pid {pid}) took the answer"
    else:
        tail = f"its supervisor (pid {pid}) has not taken the answer yet; it will when it wakes"
    print(f"{what}; {tail}", flush=True)
    return 0


def _taken(job: JobDir) -> bool:
    end = time.monotonic() + TAKEN_WAIT_S
    while os.path.lexists(job.approval_file):
        if time.monotonic() >= end:
            return False
        time.sleep(TAKEN_POLL_S)
    return True
