"""The shared lease store of SPEC §10: one row per job in PostgreSQL, taken and renewed by single statements.

Import this module only when a lease URL is used: it imports psycopg (the `hbwrap[postgres]` extra).

The row (table `hbwrap_leases`, created on first use):

    job text PRIMARY KEY, holder_host, holder_id, run_id, generation bigint (> 0, only grows: the fencing
    token HBWRAP_FENCE), status, attempt, checkpoint, checkpoint_at, lease_s, acquired_at, renewed_at,
    expires_at (judged by the server: now() + lease), released_at (NULL while the run holds the job)

- `acquire` takes the row when it is absent, released, expired by the server's clock, or already this
  holder's, and bumps the generation; a run that was never released (its holder died or was cut off) is
  continued: its run id and checkpoint stay, and `Acquired.takeover` says so.
- `renew`, `set_checkpoint` only while the generation is the caller's, the run unreleased and the lease
  unexpired; `release` (run end) while the generation is the caller's. Otherwise they return `Lost`.
- Every operation is one statement in autocommit (the acquire reruns itself when it raced the very first
  insert of the job), so there is nothing to leave half-done; no advisory locks, so PgBouncer is fine.

The URL is a libpq URL (`postgresql://user:password@host:port/dbname?sslmode=...`). The table lives in the
schema named by the query parameter `hbwrap_schema=NAME` (created when missing; hbwrap removes the
parameter before connecting), else in the first existing schema of the connection's search_path
(`?options=-csearch_path%3DNAME` works too). A table of that name whose columns are not ours is refused
(`LeaseSchemaError`) before anything is written.

Connections: autocommit, no prepared statements (PgBouncer in transaction mode), connect_timeout = what
is left of the operation's budget in whole seconds, at least 2 (libpq's floor), TCP keepalives after 5 s idle then every 2 s (a dead idle connection is noticed within
9 s), tcp_user_timeout 5 s (unacknowledged data), statement_timeout = timeout_s on the server, and on the
client every operation is cut off after `timeout_s` (default 5 s; `lease_rules.op_timeout_s(lease)`) by
shutting its socket down, which also covers a server or proxy that accepts bytes and never answers.
Errors are `LeaseStoreError`s (exit 125) with one line naming the URL masked; no secret of the URL
appears in any message.
"""
from __future__ import annotations

import math
import os
import socket
import threading
import time
from dataclasses import dataclass

from hbwrap.errors import LeaseSchemaError, LeaseStoreError, LeaseUnreachable
from hbwrap.lease_url import LeaseUrl, default_host, mask_lease_url, need_psycopg, new_holder_id, parse_lease_url

psycopg = need_psycopg()  # without the extra: one `hbwrap: ... pip install 'hbwrap[postgres]'` line, exit 125
from psycopg import errors as pg_errors  # noqa: E402
from psycopg import sql  # noqa: E402

__all__ = ["Acquired", "Busy", "LeaseRow", "LeaseSchemaError", "LeaseStore", "LeaseStoreError",
           "LeaseUnreachable", "LeaseUrl", "Lost", "default_host", "mask_lease_url", "new_holder_id",
           "parse_lease_url"]

TABLE = "hbwrap_leases"
DEFAULT_TIMEOUT_S = 5.0
MIN_CONNECT_TIMEOUT_S = 2  # libpq and psycopg take whole seconds, at least 2
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
             "tcp_user_timeout": 5000}
ACQUIRE_RACE_RETRIES = 3
MAX_TEXT = 4096              # characters kept of a checkpoint (or any text) stored in the row
MAX_LEASE_S = 366 * 86400.0  # make_interval() takes far more; a longer lease is a mistake
CREATE_RACE_RETRIES = 3  # the schema, then the table, may each be created by another hbwrap meanwhile

# name -> format_type() of each column of ours; a table that lacks one of them is not ours
COLUMNS = {
    "job": "text", "holder_host": "text", "holder_id": "text", "run_id": "text", "generation": "bigint",
    "status": "text", "attempt": "integer", "checkpoint": "text", "checkpoint_at": "timestamp with time zone",
    "lease_s": "double precision", "acquired_at": "timestamp with time zone",
    "renewed_at": "timestamp with time zone", "expires_at": "timestamp with time zone",
    "released_at": "timestamp with time zone",
}
TIME_COLUMNS = frozenset(c for c, t in COLUMNS.items() if t.startswith("timestamp"))

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {t} (
    job           text PRIMARY KEY,
    holder_host   text NOT NULL,
    holder_id     text NOT NULL,
    run_id        text NOT NULL,
    generation    bigint NOT NULL CHECK (generation > 0),
    status        text NOT NULL,
    attempt       integer,
    checkpoint    text,
    checkpoint_at timestamptz,
    lease_s       double precision NOT NULL,
    acquired_at   timestamptz NOT NULL,
    renewed_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    released_at   timestamptz
)"""
COMMENT_TABLE = "COMMENT ON TABLE {t} IS 'hbwrap job leases: one row per job; generation is the fencing token'"

INSPECT = """
WITH s AS (SELECT coalesce(%(schema)s::text, current_schema()) AS name)
SELECT s.name, n.oid IS NOT NULL, c.relkind::text,
       (SELECT json_object_agg(a.attname, format_type(a.atttypid, a.atttypmod))
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'job'
                WHERE i.indrelid = c.oid AND i.indisunique AND i.indnatts = 1 AND i.indkey[0] = a.attnum)
FROM s LEFT JOIN pg_namespace n ON n.nspname = s.name
       LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = %(table)s
"""


def _row_columns(alias: str) -> str:
    return ", ".join(f"extract(epoch FROM {alias}.{c})::float8" if c in TIME_COLUMNS else f"{alias}.{c}"
                     for c in COLUMNS)


LEASE_FOR = "make_interval(secs => %(lease_s)s::float8)"
CONTINUING = "(o.released_at IS NULL AND NOT %(fresh)s::boolean)"

ACQUIRE = f"""
WITH old AS (
    SELECT * FROM {{t}} WHERE job = %(job)s::text FOR UPDATE
), ins AS (
    INSERT INTO {{t}} AS t (job, holder_host, holder_id, run_id, generation, status, lease_s,
                           acquired_at, renewed_at, expires_at)
    SELECT %(job)s::text, %(host)s::text, %(holder)s::text, %(run_id)s::text, 1, %(status)s::text,
           %(lease_s)s::float8, now(), now(), now() + {LEASE_FOR}
    WHERE NOT EXISTS (SELECT 1 FROM old)
    ON CONFLICT (job) DO NOTHING
    RETURNING t.generation, t.run_id, t.expires_at
), upd AS (
    UPDATE {{t}} AS t SET
        holder_host = %(host)s::text, holder_id = %(holder)s::text,
        run_id = CASE WHEN {CONTINUING} THEN o.run_id ELSE %(run_id)s::text END,
        checkpoint = CASE WHEN {CONTINUING} THEN o.checkpoint END,
        checkpoint_at = CASE WHEN {CONTINUING} THEN o.checkpoint_at END,
        attempt = CASE WHEN {CONTINUING} THEN o.attempt END,
        generation = o.generation + 1, status = %(status)s::text, lease_s = %(lease_s)s::float8,
        acquired_at = now(), renewed_at = now(), released_at = NULL, expires_at = now() + {LEASE_FOR}
    FROM old AS o
    WHERE t.job = o.job
      AND (o.released_at IS NOT NULL OR o.expires_at <= now() OR o.holder_id = %(holder)s::text)
    RETURNING t.generation, t.run_id, t.expires_at
), res AS (
    SELECT * FROM ins UNION ALL SELECT * FROM upd
)
SELECT (SELECT generation FROM res), (SELECT run_id FROM res),
       (SELECT extract(epoch FROM expires_at - clock_timestamp())::float8 FROM res),
       extract(epoch FROM now())::float8, {_row_columns("old")}
FROM (SELECT 1) AS one LEFT JOIN old ON true
"""

# One statement for every holder-only write: `cur` is the row as the statement found it (to say why the
# write was refused), `upd` the write itself, guarded by the generation.
GUARDED = """
WITH cur AS (
    SELECT generation, holder_host, released_at IS NOT NULL AS released, expires_at <= now() AS expired
    FROM {t} WHERE job = %(job)s::text
), upd AS (
    UPDATE {t} SET {sets} WHERE job = %(job)s::text AND generation = %(gen)s::bigint {guard}
    RETURNING extract(epoch FROM expires_at - clock_timestamp())::float8
)
SELECT (SELECT * FROM upd), cur.generation, cur.holder_host, cur.released, cur.expired
FROM (SELECT 1) AS one LEFT JOIN cur ON true
"""
HELD = "AND released_at IS NULL AND expires_at > now()"
SET_CHECKPOINT = ("checkpoint_at = CASE WHEN %(cp)s::text IS NOT NULL AND %(cp)s::text IS DISTINCT FROM checkpoint "
                  "THEN now() ELSE checkpoint_at END, checkpoint = coalesce(%(cp)s::text, checkpoint)")
SET_ATTEMPT = "attempt = coalesce(%(attempt)s::integer, attempt)"
RENEW_SETS = (f"renewed_at = now(), expires_at = now() + {LEASE_FOR}, lease_s = %(lease_s)s::float8, "
              f"status = coalesce(%(status)s::text, status), {SET_CHECKPOINT}, {SET_ATTEMPT}")
RELEASE_SETS = (f"status = %(status)s::text, released_at = coalesce(released_at, now()), "
                f"expires_at = least(expires_at, now()), {SET_CHECKPOINT}, {SET_ATTEMPT}")

FLEET = f"SELECT {_row_columns('t')}, extract(epoch FROM now())::float8 FROM {{t}} AS t {{where}} ORDER BY t.job"


# --- results ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LeaseRow:
    """One job's row; times are epoch seconds of the server's clock, `server_now` when it was read."""

    job: str
    holder_host: str
    holder_id: str
    run_id: str
    generation: int
    status: str
    attempt: int | None
    checkpoint: str | None
    checkpoint_at: float | None
    lease_s: float
    acquired_at: float
    renewed_at: float
    expires_at: float
    released_at: float | None
    server_now: float

    @property
    def lease_state(self) -> str:
        """`held` (a live lease), `expired` (its holder stopped renewing: takeover due) or `released` (run over)."""
        if self.released_at is not None:
            return "released"
        return "held" if self.expires_at > self.server_now else "expired"

    @property
    def expires_in_s(self) -> float:
        return self.expires_at - self.server_now

    @property
    def lease_age_s(self) -> float:
        """Seconds since the lease was last taken or renewed."""
        return self.server_now - self.renewed_at


def _row(values) -> LeaseRow | None:
    """A LeaseRow from the columns of `_row_columns` followed by the server's now; None for a missing row."""
    *cols, server_now = values
    if cols[0] is None:
        return None
    return LeaseRow(*cols, server_now=server_now)


@dataclass(frozen=True)
class Acquired:
    """The lease is ours: `generation` is HBWRAP_FENCE; valid for `valid_for_s` from when the call was sent."""

    job: str
    generation: int
    run_id: str
    valid_for_s: float
    previous: LeaseRow | None   # the row as it was just before (None: first run of the job in this store)
    continuing: bool            # the previous run never ended: its run id and checkpoint were kept
    takeover: bool              # ... and it was another holder's whose lease had expired

    @property
    def checkpoint(self) -> str | None:
        """The shared checkpoint to resume from (HBWRAP_RESUME_FROM), when continuing a run."""
        return self.previous.checkpoint if self.continuing and self.previous else None


@dataclass(frozen=True)
class Busy:
    """Another holder's live lease."""

    job: str
    holder_host: str
    holder_id: str
    run_id: str
    generation: int
    status: str
    expires_in_s: float


@dataclass(frozen=True)
class Lost:
    """A holder-only write refused: the lease is no longer the caller's. Stop, record lease_lost, exit 75."""

    job: str
    reason: str                 # taken | expired | released | gone
    generation: int | None      # the row's generation now (None: the row is gone)
    holder_host: str | None

    def describe(self) -> str:
        if self.reason == "taken":
            by = f" by {self.holder_host}" if self.holder_host else ""
            return f"lease of {self.job} taken over{by} (generation {self.generation})"
        if self.reason == "gone":
            return f"lease of {self.job} is gone from the store"
        return f"lease of {self.job} {self.reason}"


# --- the store --------------------------------------------------------------------------------------

class _Cutoff:
    """Shuts a connection's socket down if an operation outlives its budget (a black-holed peer)."""

    def __init__(self, fd: int, after_s: float):
        # our own descriptor of the socket: shutting it down never hits a number reused after close()
        self._sock = socket.socket(fileno=os.dup(fd))
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(max(0.0, after_s), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def finish(self) -> bool:
        """Stop the timer; True if it fired (the connection is unusable)."""
        with self._lock:
            self._done = True
        self._timer.cancel()
        self._sock.close()
        return self.fired


class LeaseStore:
    """The lease rows in one PostgreSQL database: one connection, operations serialised, each bounded."""

    def __init__(self, url: str | LeaseUrl, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.url = url if isinstance(url, LeaseUrl) else parse_lease_url(url)
        self.timeout_s = float(timeout_s)
        self.table: str | None = None      # "schema"."hbwrap_leases" once checked
        self.statements = 0                # statements sent, for the figures
        self._conn = None
        self._lock = threading.Lock()

    # --- the operations -----------------------------------------------------------------------------
    def acquire(self, job: str, host: str, holder: str, run_id: str, lease_s: float, *,
                status: str = "starting", fresh_run: bool = False) -> Acquired | Busy:
        """Take the job's lease when it is free, expired (server clock) or already `holder`'s.

        An unreleased previous run is continued (its run id and checkpoint kept) unless `fresh_run`.
        """
        params = {"job": job, "host": host, "holder": holder, "run_id": run_id, "lease_s": lease_seconds(lease_s),
                  "status": status, "fresh": bool(fresh_run)}
        for _ in range(ACQUIRE_RACE_RETRIES):
            got = self._run(lambda conn: self._fetch(conn, ACQUIRE, params))
            generation, run, valid_for_s, server_now, *old = got
            previous = _row([*old, server_now])
            if generation is not None:
                continuing = previous is not None and previous.released_at is None and not fresh_run
                takeover = (previous is not None and previous.released_at is None
                            and previous.holder_id != holder)
                return Acquired(job, generation, run, valid_for_s, previous, continuing, takeover)
            if previous is not None:
                return Busy(job, previous.holder_host, previous.holder_id, previous.run_id,
                            previous.generation, previous.status, previous.expires_in_s)
            # neither taken nor seen: another acquire inserted the job's first row after our snapshot
        raise LeaseStoreError(f"lease store {self.url.masked}: acquire of {job} kept racing another one")

    def renew(self, job: str, generation: int, lease_s: float, status: str | None = None,
              checkpoint: str | None = None, attempt: int | None = None) -> float | Lost:
        """Extend the lease to server now() + lease_s; returns how long it is valid now (server-measured)."""
        return self._guarded(job, generation, RENEW_SETS, HELD, {
            "lease_s": lease_seconds(lease_s), "status": status, "cp": checkpoint, "attempt": attempt})

    def set_checkpoint(self, job: str, generation: int, checkpoint: str) -> float | Lost:
        """Publish the checkpoint (checkpoint_at = server now() when it changed); returns the lease's validity."""
        return self._guarded(job, generation, SET_CHECKPOINT, HELD, {"cp": checkpoint})

    def release(self, job: str, generation: int, status: str, checkpoint: str | None = None,
                attempt: int | None = None) -> None | Lost:
        """At run end: record the final status, free the job (the generation stays, so it still only grows)."""
        got = self._guarded(job, generation, RELEASE_SETS, "", {"status": status, "cp": checkpoint, "attempt": attempt})
        return got if isinstance(got, Lost) else None

    def fleet(self, job: str | None = None) -> list[LeaseRow]:
        """Every job's row (or one job's), by name."""
        where, params = ("WHERE t.job = %(job)s::text", {"job": job}) if job is not None else ("", {})

        def query(conn):
            self.statements += 1
            return conn.execute(self._sql(FLEET, where=sql.SQL(where)), params).fetchall()

        return [_row(r) for r in self._run(query)]

    def check(self) -> None:
        """Connect and check (or create) the table: raises the error `run` would meet, else returns."""
        self._run(lambda conn: None)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> "LeaseStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- machinery ----------------------------------------------------------------------------------
    def _guarded(self, job, generation, sets, guard, params):
        params = {"job": job, "gen": int(generation), **params}
        valid_for_s, gen_now, holder_host, released, expired = self._run(
            lambda conn: self._fetch(conn, GUARDED, params, sets=sql.SQL(sets), guard=sql.SQL(guard)))
        if valid_for_s is not None:
            return valid_for_s
        if gen_now is None:
            return Lost(job, "gone", None, None)
        if gen_now != generation:
            return Lost(job, "taken", gen_now, holder_host)
        return Lost(job, "released" if released else "expired" if expired else "taken", gen_now, holder_host)

    def _sql(self, template: str, **parts):
        return sql.SQL(template).format(t=sql.SQL(self.table), **parts)

    def _fetch(self, conn, template: str, params: dict, **parts):
        self.statements += 1
        clean = {k: db_text(v) if isinstance(v, str) else v for k, v in params.items()}
        return conn.execute(self._sql(template, **parts), clean).fetchone()

    def _run(self, fn):
        """fn(connection) within one operation budget; psycopg errors become LeaseStoreErrors, masked."""
        with self._lock:
            deadline = time.monotonic() + self.timeout_s
            cutoff = None
            try:
                conn = self._connection(deadline)
                cutoff = _Cutoff(conn.fileno(), deadline - time.monotonic())
                try:
                    if self.table is None:
                        self.table = self._ensure_table(conn)
                    return fn(conn)
                finally:
                    if cutoff.finish():
                        self._drop()
            except psycopg.Error as exc:
                self._drop()
                if isinstance(exc, pg_errors.UndefinedTable):
                    self.table = None  # dropped under us: the next operation checks (and creates) it again
                raise self._error(exc, cutoff is not None and cutoff.fired) from None

    def _connection(self, deadline: float):
        if self._conn is not None and not self._conn.closed:
            return self._conn
        given = psycopg.conninfo.conninfo_to_dict(self.url.conninfo)
        extra = {k: v for k, v in KEEPALIVE.items() if k not in given}
        if "application_name" not in given:
            extra["application_name"] = "hbwrap"
        try:
            conn = psycopg.Connection.connect(
                self.url.conninfo, autocommit=True, prepare_threshold=None,
                connect_timeout=connect_timeout_s(deadline - time.monotonic()), **extra)
        except psycopg.Error as exc:
            raise self._error(exc, False, connecting=True) from None
        self._conn = conn
        cutoff = _Cutoff(conn.fileno(), deadline - time.monotonic())
        try:
            # a server-side bound too, so that a statement we gave up on does not keep the row locked
            self.statements += 1
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{int(self.timeout_s * 1000)}ms",))
        except psycopg.Error as exc:
            self._drop()
            raise self._error(exc, cutoff.finish(), connecting=True) from None
        if cutoff.finish():
            self._drop()
            raise LeaseUnreachable(f"lease store {self.url.masked}: no answer within {self.timeout_s:g}s")
        return conn

    def _ensure_table(self, conn) -> str:
        """Create the schema and table when missing; refuse a table of our name that is not ours."""
        for attempt in range(CREATE_RACE_RETRIES + 1):
            self.statements += 1
            schema, schema_exists, relkind, columns, job_unique = conn.execute(
                INSPECT, {"schema": self.url.schema, "table": TABLE}).fetchone()
            if schema is None:
                raise LeaseSchemaError(f"lease store {self.url.masked}: no schema of the search_path exists; "
                                       f"name one with ?hbwrap_schema=NAME")
            table = sql.Identifier(schema, TABLE).as_string(conn)
            if relkind is not None:
                self._check_columns(table, relkind, columns or {}, job_unique)
                return table
            try:
                if not schema_exists:
                    self.statements += 1
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                self.statements += 2
                conn.execute(CREATE_TABLE.format(t=table))
                conn.execute(COMMENT_TABLE.format(t=table))
            except (pg_errors.UniqueViolation, pg_errors.DuplicateTable, pg_errors.DuplicateSchema,
                    pg_errors.DuplicateObject):
                if attempt == CREATE_RACE_RETRIES:
                    raise
                # another hbwrap created the schema or the table at the same instant: look again
        raise LeaseSchemaError(f"lease store {self.url.masked}: could not create {TABLE}")  # pragma: no cover

    def _check_columns(self, table: str, relkind: str, columns: dict, job_unique: bool) -> None:
        problems = []
        if relkind not in ("r", "p"):
            problems.append("it is not a table")
        missing = [c for c in COLUMNS if c not in columns]
        if missing:
            problems.append("no column " + ", ".join(missing))
        wrong = [f"{c} is {columns[c]}, not {t}" for c, t in COLUMNS.items() if c in columns and columns[c] != t]
        if wrong:
            problems.append("; ".join(wrong))
        if not missing and not job_unique:
            problems.append("job is not its primary key")
        if problems:
            raise LeaseSchemaError(f"lease store {self.url.masked}: {table} is not hbwrap's lease table "
                                   f"({'; '.join(problems)}); nothing was written. Name another schema with "
                                   f"?hbwrap_schema=NAME")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing more to lose
                pass

    def _error(self, exc: Exception, timed_out: bool, connecting: bool = False) -> LeaseStoreError:
        where = f"lease store {self.url.masked}"
        if timed_out:
            return LeaseUnreachable(f"{where}: no answer within {self.timeout_s:g}s")
        detail = self.url.scrub(str(exc)) or type(exc).__name__
        if connecting:
            return LeaseUnreachable(f"{where}: cannot connect: {detail.removeprefix('connection failed: ')}")
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return LeaseUnreachable(f"{where}: {detail}")
        return LeaseStoreError(f"{where}: {detail}")


def db_text(value: str, limit: int = MAX_TEXT) -> str:
    """`value` as PostgreSQL text can hold it: no NUL, no lone surrogate (output decoded with
    surrogateescape), at most `limit` characters. A checkpoint must never make a renewal fail."""
    value = value[:limit].replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8")


def lease_seconds(lease_s: float) -> float:
    lease_s = float(lease_s)
    if not (0 < lease_s <= MAX_LEASE_S):
        raise ValueError(f"lease_s must be in (0, {MAX_LEASE_S:g}], not {lease_s!r}")
    return lease_s


def connect_timeout_s(remaining_s: float) -> int:
    """The connect_timeout for what is left of an operation's budget (whole seconds, at least 2)."""
    return max(MIN_CONNECT_TIMEOUT_S, int(math.floor(remaining_s)))
