"""The lease store when things are wrong: bad URLs, masked secrets, a foreign table, a cut network, start-up cost."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from helpers.pgtest import pg, pg_server, with_query  # noqa: F401 (fixtures)
from helpers.tcpproxy import TcpProxy

lease_pg = pytest.importorskip("hbwrap.lease_pg", reason="psycopg is not installed (pip install -e '.[postgres]')")
from hbwrap.errors import UsageError  # noqa: E402
from hbwrap.lease_pg import (Acquired, LeaseSchemaError, LeaseStore, LeaseUnreachable, parse_lease_url,  # noqa: E402
                             mask_lease_url)

SECRET = "Sup3rSecretPw"
SLACK_S = 1.5  # scheduling slack on a loaded 2-core machine, on top of the documented bound


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_masked_line(text: str) -> str:
    assert "\n" not in text.strip(), text
    for secret in (SECRET, "p@ss/word", "p%40ss%2Fword"):
        assert secret not in text, text
    return text


# --- URLs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    (f"postgresql://postgres:{SECRET}@db.example:5433/jobs", "postgresql://postgres:***@db.example:5433/jobs"),
    ("postgres://u:p%40ss%2Fword@h/d?sslmode=require&hbwrap_schema=ops",
     "postgres://u:***@h/d?sslmode=require&hbwrap_schema=ops"),
    (f"postgresql://u@h/d?password={SECRET}&application_name=x", "postgresql://u@h/d?password=***&application_name=x"),
    ("postgresql://h1:5432,h2:5433/d", "postgresql://h1:5432,h2:5433/d"),
    ("postgresql:///test", "postgresql:///test"),
])
def test_urls_are_shown_with_their_secrets_masked(url, shown):
    parsed = parse_lease_url(url)
    assert parsed.masked == shown
    assert "hbwrap_schema" not in parsed.conninfo, "libpq would refuse a parameter it does not know"
    assert mask_lease_url(url) == shown


@pytest.mark.parametrize("url, says", [
    (f"mysql://root:{SECRET}@h/d", "expected a postgresql:// URL"),
    (f"host=h password={SECRET}", "expected a postgresql:// URL"),
    (f"postgresql://postgres:{SECRET}%zz@127.0.0.1/test", "invalid percent-encoded token"),
    (f"postgresql://postgres:{SECRET}@[::1:5432/test", "IPv6"),
    (f"postgresql://postgres:{SECRET}@h/d?frobnicate=1", "invalid URI query parameter"),
    (f"postgresql://postgres:{SECRET}@h/d?hbwrap_schema=a;drop", "hbwrap_schema must be a plain SQL name"),
])
def test_malformed_urls_are_usage_errors_naming_the_option_never_the_password(url, says):
    with pytest.raises(UsageError) as caught:
        parse_lease_url(url)
    text = one_masked_line(str(caught.value))
    assert text.startswith("--lease-url: ") and says in text, text
    assert SECRET not in mask_lease_url(url)


def test_unreachable_port_and_unknown_host_are_one_line_errors_with_the_url_masked(pg_server):
    parts = urlsplit(pg_server)
    closed = f"postgresql://{parts.username}:{SECRET}@127.0.0.1:{free_port()}{parts.path}"
    with pytest.raises(LeaseUnreachable) as caught:
        LeaseStore(closed).check()
    text = one_masked_line(str(caught.value))
    assert text.startswith(f"lease store postgresql://{parts.username}:***@127.0.0.1:") and "refused" in text, text

    with pytest.raises(LeaseUnreachable) as caught:
        LeaseStore(f"postgresql://u:{SECRET}@no-such-host.invalid/test").check()
    text = one_masked_line(str(caught.value))
    assert "no-such-host.invalid" in text and "u:***@" in text, text


def test_the_cli_says_one_line_and_exits_125_or_2(hb, pg_server):
    parts = urlsplit(pg_server)
    cases = [
        (f"postgresql://{parts.username}:{SECRET}@127.0.0.1:{free_port()}/test", 125, "refused"),
        (f"postgresql://u:{SECRET}@no-such-host.invalid/test", 125, "no-such-host.invalid"),
        (f"postgresql://u:{SECRET}%zz@127.0.0.1/test", 2, "--lease-url"),
        (f"https://u:{SECRET}@127.0.0.1/test", 2, "--lease-url"),
    ]
    for url, code, says in cases:
        r = hb.run("status", "--fleet", "--lease-url", url)
        assert r.returncode == code, (url, r)
        assert r.out == "" and r.err.startswith("hbwrap: ") and says in r.err, r
        one_masked_line(r.err)


# --- a table of our name that is not ours ----------------------------------------------------------------

OUR_COLUMNS = ", ".join(f"{c} {t}" for c, t in lease_pg.COLUMNS.items() if c != "job")
FOREIGN = {
    "unrelated": ("CREATE TABLE {t} (id serial PRIMARY KEY, job text, note text)", "no column holder_host"),
    "wrong-type": ("CREATE TABLE {t} (job text PRIMARY KEY, " + OUR_COLUMNS.replace("generation bigint", "generation integer") + ")",
                   "generation is integer, not bigint"),
    "no-key": ("CREATE TABLE {t} (job text, " + OUR_COLUMNS + ")", "job is not its primary key"),
    "a-view": ("CREATE VIEW {t} AS SELECT 'x'::text AS job", "it is not a table"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_foreign_table_of_our_name_is_refused_and_nothing_is_written(pg, kind):
    create, says = FOREIGN[kind]
    table = f'"{pg.schema}".hbwrap_leases'
    pg.sql(f'CREATE SCHEMA "{pg.schema}"', fetch=False)
    pg.sql(create.format(t=table), fetch=False)
    if kind != "a-view":
        pg.sql(f"INSERT INTO {table} (job) VALUES ('theirs')", fetch=False)
    before = pg.sql(f"SELECT * FROM {table}")
    columns = pg.sql("SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
                     (table,))
    store = LeaseStore(pg.url())
    for attempt in (lambda: store.acquire("j", "a", "a:1", "r", 30), lambda: store.renew("j", 1, 30), store.fleet):
        with pytest.raises(LeaseSchemaError) as caught:
            attempt()
        text = one_masked_line(str(caught.value))
        assert f'"{pg.schema}"."hbwrap_leases" is not hbwrap\'s lease table' in text and says in text, text
        assert "nothing was written" in text and "hbwrap_schema" in text
    assert pg.sql(f"SELECT * FROM {table}") == before
    assert pg.sql("SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
                  (table,)) == columns


def test_a_search_path_without_an_existing_schema_is_refused(pg):
    url = with_query(pg.base, options="-csearch_path%3Dno_such_schema_here")
    with pytest.raises(LeaseSchemaError, match="hbwrap_schema=NAME"):
        LeaseStore(url).check()


# --- a cut network -------------------------------------------------------------------------------------

@pytest.fixture
def proxy(pg_server):
    parts = urlsplit(pg_server)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as p:
        yield p


def _timed(fn):
    t0 = time.monotonic()
    with pytest.raises(LeaseUnreachable) as caught:
        fn()
    return time.monotonic() - t0, one_masked_line(str(caught.value))


def test_a_renew_through_a_black_holed_network_fails_within_the_operation_bound(pg, proxy):
    timeout_s = 1.0
    with LeaseStore(proxy.url(pg.url()), timeout_s=timeout_s) as store:
        got = store.acquire("j", "a", "a:1", "r", 30)
        assert isinstance(got, Acquired)
        proxy.cut("blackhole")
        elapsed, text = _timed(lambda: store.renew("j", got.generation, 30))
        assert elapsed < timeout_s + SLACK_S, f"renew took {elapsed:.2f}s through a black hole"
        assert "no answer within 1s" in text, text
        # the next try needs a new connection, which the black hole never completes: connect_timeout, 2 s at least
        elapsed, text = _timed(lambda: store.renew("j", got.generation, 30))
        assert elapsed < lease_pg.connect_timeout_s(timeout_s) + SLACK_S, f"reconnect took {elapsed:.2f}s"
        proxy.restore()
        assert store.renew("j", got.generation, 30) > 0, "the lease is still ours once the network is back"


def test_a_renew_through_a_refused_network_fails_at_once_and_recovers(pg, proxy):
    with LeaseStore(proxy.url(pg.url()), timeout_s=1.0) as store:
        got = store.acquire("j", "a", "a:1", "r", 30)
        proxy.cut("refuse")
        elapsed, text = _timed(lambda: store.renew("j", got.generation, 30))
        assert elapsed < 1.0 + SLACK_S, text
        elapsed, text = _timed(lambda: store.renew("j", got.generation, 30))
        assert "cannot connect" in text and "refused" in text, text
        proxy.restore()
        assert store.renew("j", got.generation, 30) > 0


# --- start-up ------------------------------------------------------------------------------------------

def test_psycopg_is_imported_only_when_a_lease_url_is_used(tmp_path):
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import hbwrap.cli"], capture_output=True, text=True)
    assert r.returncode == 0 and "hbwrap.cli" in r.stderr, r.stderr[-2000:]
    assert "psycopg" not in r.stderr
    probe = ("import sys, hbwrap.cli, hbwrap.lease_rules, hbwrap.lease_worker, hbwrap.fleet; "
             "sys.exit(any(m.split('.')[0] == 'psycopg' for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "hbwrap", "status"], capture_output=True, text=True,
                       env={"HBWRAP_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "psycopg" not in r.stderr, r.stderr[-2000:]
