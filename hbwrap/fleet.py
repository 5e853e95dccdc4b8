"""`hbwrap status --fleet`: every job of the shared lease store as a text table or JSON (ages by the server's clock)."""
from __future__ import annotations

import json
import sys

from hbwrap.jobstore import iso
from hbwrap.views import _span as span

FLEET_COLUMNS = ("JOB", "HOST", "GEN", "STATUS", "LEASE", "RENEWED", "CHECKPOINT", "LAST PROGRESS")
LEASE_ORDER = {"held": 0, "expired": 1, "released": 2}


def fleet_record(row) -> dict:
    """One LeaseRow as the JSON object of `status --fleet --json` (times ISO 8601 UTC, ages in seconds)."""
    return {
        "name": row.job,
        "holder_host": row.holder_host,
        "holder_id": row.holder_id,
        "run_id": row.run_id,
        "generation": row.generation,
        "status": row.status,
        "lease": row.lease_state,
        "attempt": row.attempt,
        "checkpoint": row.checkpoint,
        "last_progress_at": iso(row.checkpoint_at),
        "acquired_at": iso(row.acquired_at),
        "renewed_at": iso(row.renewed_at),
        "expires_at": iso(row.expires_at),
        "released_at": iso(row.released_at),
        "lease_s": row.lease_s,
        "lease_age_s": round(row.lease_age_s, 3),
        "expires_in_s": round(row.expires_in_s, 3),
        "server_time": iso(row.server_now),
    }


def fleet_json(rows) -> str:
    return json.dumps([fleet_record(r) for r in rows], indent=2) + "\n"


def _ago(ts: float | None, now: float) -> str:
    return "-" if ts is None else span(max(0.0, now - ts)) + " ago"


def lease_cell(row) -> str:
    if row.lease_state == "held":
        return f"held, {span(max(0.0, row.expires_in_s))} left"
    if row.lease_state == "expired":
        return f"expired {span(max(0.0, -row.expires_in_s))} ago"
    return f"released {_ago(row.released_at, row.server_now)}"


def fleet_cells(row) -> tuple[str, ...]:
    return (row.job, row.holder_host, str(row.generation), row.status, lease_cell(row),
            _ago(row.renewed_at, row.server_now), (row.checkpoint or "-")[:40],
            _ago(row.checkpoint_at, row.server_now))


def fleet_text(rows) -> str:
    """Plain aligned columns: held leases first, then expired ones (takeover due), then finished runs."""
    if not rows:
        return "no jobs in the lease store\n"
    ordered = sorted(rows, key=lambda r: (LEASE_ORDER[r.lease_state], r.job))
    table = [FLEET_COLUMNS] + [fleet_cells(r) for r in ordered]
    widths = [max(len(line[i]) for line in table) for i in range(len(FLEET_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table) + "\n"


def print_fleet(url: str, name: str | None, as_json: bool) -> int:
    """Read the store at `url` and print it; exit 1 when `name` is not in it. Errors raise LeaseStoreError."""
    from hbwrap.errors import UnknownJob
    from hbwrap.lease_pg import LeaseStore

    with LeaseStore(url) as store:
        rows = store.fleet(name)
        masked = store.url.masked
    if name is not None and not rows:
        raise UnknownJob(f"no job named {name!r} in the lease store {masked}")
    sys.stdout.write(fleet_json(rows) if as_json else fleet_text(rows))
    return 0
