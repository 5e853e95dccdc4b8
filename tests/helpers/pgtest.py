"""PostgreSQL fixtures for the lease tests: the server from HBWRAP_TEST_POSTGRES and a fresh schema per test.

Where no server answers (or psycopg is missing) the tests that use `pg` are skipped with a one-line reason,
except under CI=true, where that is a failure. Import the fixtures into a test module:

    from helpers.pgtest import pg, pg_server  # noqa: F401 (fixtures)
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

import pytest

PG_URL = os.environ.get("HBWRAP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def with_query(url: str, **params: str) -> str:
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    return url + ("&" if "?" in url else "?") + extra if extra else url


def _server_problem() -> str | None:
    try:
        import psycopg
        from hbwrap.lease_pg import mask_lease_url
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"no PostgreSQL at {mask_lease_url(PG_URL)} (HBWRAP_TEST_POSTGRES): {first}"
    return None


@pytest.fixture(scope="session")
def pg_server() -> str:
    problem = _server_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; under CI=true a missing server is a failure")
        pytest.skip(problem)
    return PG_URL


@dataclass
class PgSchema:
    base: str      # the server's URL as given
    schema: str    # a schema no other test uses (dropped afterwards)

    def url(self, **params: str) -> str:
        """The lease URL for this test's schema."""
        return with_query(self.base, hbwrap_schema=self.schema, **params)

    def sql(self, query: str, params=None, fetch: bool = True):
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if fetch and cur.description else None


@pytest.fixture
def pg(pg_server):
    schema = f"hbwrap_t_{os.getpid()}_{secrets.token_hex(3)}"
    s = PgSchema(pg_server, schema)
    yield s
    s.sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', fetch=False)
