"""Whether a job has an orphaned run, a run whose supervisor is gone: what every `hbwrap run` and `watch`
asks first. Adopting one is takeover.py's, imported only when there is one to adopt.
"""
from __future__ import annotations

import os

from hbwrap import procs
from hbwrap.errors import StateError
from hbwrap.jobstore import JobDir
from hbwrap.lease import stderr_line
from hbwrap.model import ACTIVE_VALUES, RecordError, RunRecord


def read_record(job: JobDir) -> tuple[dict | None, RunRecord | None]:
    """(document, record) of state.json; StateError if it is unreadable, foreign or of the wrong types."""
    doc = job.read_state()
    if doc is None:
        return None, None
    try:
        return doc, RunRecord.from_doc(doc, 0.0)
    except RecordError as exc:
        raise StateError(f"{job.state_file} is not a usable hbwrap state file ({exc})") from None


def keeper_processes(job: JobDir) -> list[int]:
    """Pids of keeper processes of this job dir that are alive now (found by their command line)."""
    return procs.find_by_argv(b"hbwrap.keeper", os.fsencode(str(job.path)))


def orphan_doc(job: JobDir, now_wall: float) -> dict | None:
    """The recorded state if it describes a run whose supervisor is gone (the caller holds the lock).

    An unreadable state is moved aside (a new run starts) unless a keeper of the job is still alive: then
    its command may still run, and hbwrap refuses to start another copy.
    """
    try:
        doc, rec = read_record(job)
    except StateError as exc:
        try:
            keeper = job.read_keeper()
        except StateError:
            keeper = None
        if (keeper and procs.is_keeper(keeper.get("keeper_pid"), keeper.get("keeper_start"), str(job.path))) \
                or keeper_processes(job):
            raise StateError(f"{exc}; its command may still be running, so hbwrap will not start another: stop "
                             f"it, then remove {job.state_file}") from None
        aside = os.path.join(job.path, f"state.json.corrupt-{int(now_wall)}")
        try:
            os.replace(job.state_file, aside)
        except OSError:
            raise exc from None
        stderr_line(f"{exc}; moved it to {os.path.basename(aside)} and starting a new run")
        return None
    if rec is not None and rec.status in ACTIVE_VALUES and rec.run_id:
        return doc
    return None
