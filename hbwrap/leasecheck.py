"""Judging a supervisor's local lease by its record in state.json: when it last renewed, whether it is hung.

Light (os only): the keeper imports it to watch its supervisor, and lease.py the job lock builds on it.
`job` is anything with the job dir's `path` and `state_file` (jobstore.JobDir, the keeper's own paths).
"""
from __future__ import annotations

import os


def renewed_at(doc: dict, job=None) -> float | None:
    """When the supervisor recorded in `doc` last renewed its lease (wall seconds), None if it never did.

    A supervisor that cannot write state.json (a full disk) renews by touching it (journal.write_state),
    so with `job` the file's modification time counts too: only that supervisor writes or touches it.
    """
    renewed = doc.get("lease_renewed_at")
    if not isinstance(renewed, (int, float)) or isinstance(renewed, bool):
        return None
    if job is not None:
        try:
            renewed = max(renewed, os.lstat(job.state_file).st_mtime)
        except OSError:
            pass
    return renewed


def read_only(job) -> bool:
    """Whether the job dir is on a read-only file system, where no lease can be renewed (nor judged stale)."""
    try:
        return bool(os.statvfs(job.path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def lease_expired(doc: dict, now_wall: float, default_lease_s: float, job=None) -> bool:
    """Whether the supervisor recorded in `doc` has not renewed its lease in time (it is hung).

    With `job`: a touch of state.json renews too, and on a read-only file system a lease never expires.
    """
    renewed = renewed_at(doc, job)
    lease_s = doc.get("lease_s")
    if not isinstance(lease_s, (int, float)) or isinstance(lease_s, bool) or lease_s <= 0:
        lease_s = default_lease_s
    if renewed is None or now_wall - renewed <= lease_s:
        return False
    return job is None or not read_only(job)
