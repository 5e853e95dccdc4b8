"""The shared lease store against a real PostgreSQL: one holder, expiry by the server's clock, fencing, fleet."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from conftest import wait_until
from helpers.pgtest import pg, pg_server, with_query  # noqa: F401 (fixtures)

lease_pg = pytest.importorskip("hbwrap.lease_pg", reason="psycopg is not installed (pip install -e '.[postgres]')")
from hbwrap.lease_pg import Acquired, Busy, LeaseStore, Lost  # noqa: E402
from hbwrap import fleet  # noqa: E402


@pytest.fixture
def store(pg):
    with LeaseStore(pg.url()) as s:
        yield s


def take(store, job="j", host="a", holder=None, run_id="run-a", lease_s=30.0, **kw):
    return store.acquire(job, host, holder or f"{host}:1", run_id, lease_s, **kw)


def test_first_acquire_creates_schema_and_table_and_takes_generation_1(pg, store):
    got = take(store)
    assert isinstance(got, Acquired), got
    assert (got.generation, got.run_id, got.previous, got.continuing, got.takeover) == (1, "run-a", None, False, False)
    assert 29 < got.valid_for_s <= 30
    tables = pg.sql("SELECT schemaname, tablename FROM pg_tables WHERE tablename = 'hbwrap_leases' "
                    "AND schemaname = %s", (pg.schema,))
    assert tables == [(pg.schema, "hbwrap_leases")]
    (row,) = store.fleet()
    assert (row.job, row.holder_host, row.holder_id, row.generation, row.status, row.lease_state) == \
        ("j", "a", "a:1", 1, "starting", "held")


def test_others_are_busy_until_the_lease_expires_then_take_over_with_the_shared_checkpoint(store):
    first = take(store, lease_s=1.0)
    assert store.renew("j", first.generation, 1.0, status="running", checkpoint="page-7", attempt=2) > 0
    busy = take(store, host="b", run_id="run-b")
    assert isinstance(busy, Busy), busy
    assert (busy.holder_host, busy.generation, busy.status, busy.run_id) == ("a", 1, "running", "run-a")
    assert 0 < busy.expires_in_s <= 1.0

    got = wait_until(lambda: (r := take(store, host="b", run_id="run-b", lease_s=30)) and isinstance(r, Acquired) and r,
                     timeout=10, every=0.1, what="b taking the lease after expiry")
    assert got.generation == 2 and got.takeover and got.continuing
    assert got.run_id == "run-a", "a takeover continues the same run"
    assert got.checkpoint == "page-7"
    assert (got.previous.holder_host, got.previous.status, got.previous.attempt) == ("a", "running", 2)
    assert got.previous.lease_state == "expired"
    assert isinstance(take(store, run_id="run-c"), Busy), "the old holder may not come back while b holds it"


def test_generation_only_grows_across_holders_release_and_reacquire(store):
    seen = []
    a = take(store)
    seen.append(a.generation)
    assert store.release("j", a.generation, "succeeded", checkpoint="done") is None
    b = take(store, host="b", run_id="run-b")
    seen.append(b.generation)
    assert not b.continuing and not b.takeover, "a released run is over: the next one is a new run"
    assert b.run_id == "run-b" and b.checkpoint is None and b.previous.status == "succeeded"
    again = take(store, host="b", run_id="run-b2")
    seen.append(again.generation)
    assert isinstance(again, Acquired) and not again.takeover, "the holder itself may take its lease again"
    assert again.run_id == "run-b", "and its run goes on"
    assert store.release("j", again.generation, "failed") is None
    assert store.release("j", again.generation, "failed") is None, "release is idempotent for its holder"
    c = take(store, host="c", run_id="run-c", fresh_run=True)
    seen.append(c.generation)
    assert seen == sorted(set(seen)) and seen[0] == 1, seen
    (row,) = store.fleet()
    assert row.generation == seen[-1]


def test_fresh_run_drops_the_unreleased_run_and_its_checkpoint(store):
    a = take(store, lease_s=0.5)
    store.set_checkpoint("j", a.generation, "half")
    wait_until(lambda: store.fleet()[0].lease_state == "expired", timeout=10, every=0.05)
    b = take(store, host="b", run_id="run-b", fresh_run=True)
    assert b.takeover and not b.continuing
    assert (b.run_id, b.checkpoint, b.previous.checkpoint) == ("run-b", None, "half")
    assert store.fleet()[0].checkpoint is None


def test_renew_after_a_takeover_is_lost_and_changes_nothing(store):
    a = take(store, lease_s=0.5)
    wait_until(lambda: isinstance(r := take(store, host="b", run_id="run-b"), Acquired) and r, timeout=10, every=0.05)
    lost = store.renew("j", a.generation, 30, status="running", checkpoint="stale")
    assert lost == Lost("j", "taken", a.generation + 1, "b")
    assert "taken over by b" in lost.describe()
    assert store.set_checkpoint("j", a.generation, "stale") == lost
    assert store.release("j", a.generation, "succeeded") == lost
    (row,) = store.fleet()
    assert (row.holder_host, row.status, row.checkpoint, row.released_at) == ("b", "starting", None, None)


def test_renew_of_an_expired_lease_is_lost_even_when_nobody_took_it(store):
    a = take(store, lease_s=0.3)
    wait_until(lambda: store.fleet()[0].lease_state == "expired", timeout=10, every=0.05)
    assert store.renew("j", a.generation, 30) == Lost("j", "expired", a.generation, "a")
    assert store.set_checkpoint("j", a.generation, "x") == Lost("j", "expired", a.generation, "a")


def test_renew_after_release_and_of_an_unknown_job_is_lost(store):
    a = take(store)
    store.release("j", a.generation, "succeeded")
    assert store.renew("j", a.generation, 30) == Lost("j", "released", a.generation, "a")
    assert store.renew("nobody", 1, 30) == Lost("nobody", "gone", None, None)


def test_renew_extends_by_the_server_clock_and_carries_status_checkpoint_attempt(store):
    a = take(store, lease_s=5)
    valid_for_s = store.renew("j", a.generation, 20, status="running", checkpoint="c1", attempt=1)
    assert 19 < valid_for_s <= 20
    (row,) = store.fleet()
    assert row.expires_at - row.renewed_at == pytest.approx(20, abs=1e-3)
    assert (row.status, row.checkpoint, row.attempt, row.lease_s) == ("running", "c1", 1, 20)
    progress_at = row.checkpoint_at
    store.renew("j", a.generation, 20, checkpoint="c1")
    assert store.fleet()[0].checkpoint_at == progress_at, "the same checkpoint again is not progress"
    store.renew("j", a.generation, 20)
    assert store.fleet()[0].checkpoint == "c1", "a renewal without a checkpoint keeps the last one"
    wait_until(lambda: store.set_checkpoint("j", a.generation, "c2") and store.fleet()[0].checkpoint_at > progress_at,
               timeout=5, what="checkpoint_at moving on with a new checkpoint")


def _race_threads(url: str, n: int) -> list:
    barrier = threading.Barrier(n, timeout=20)
    results: list = [None] * n

    def one(i):
        with LeaseStore(url) as s:
            s.check() if i % 2 else None  # half of them connected and checked the table before the start
            barrier.wait()
            results[i] = s.acquire("race", f"h{i}", f"h{i}:1", f"run-{i}", 30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_many_threads_acquiring_at_once_on_a_fresh_store_give_exactly_one_holder(pg):
    results = _race_threads(pg.url(), 12)
    winners = [r for r in results if isinstance(r, Acquired)]
    assert len(winners) == 1, results
    losers = [r for r in results if isinstance(r, Busy)]
    assert len(losers) == 11, results
    assert {r.holder_id for r in losers} == {winners[0].run_id.replace("run-", "h") + ":1"}


def test_many_threads_taking_over_an_expired_lease_at_once_give_exactly_one_new_holder(pg, store):
    dead = take(store, job="race", host="dead", lease_s=0.3)
    store.renew("race", dead.generation, 0.3, checkpoint="at-dead")
    wait_until(lambda: store.fleet("race")[0].lease_state == "expired", timeout=10, every=0.05)
    results = _race_threads(pg.url(), 10)
    winners = [r for r in results if isinstance(r, Acquired)]
    assert len(winners) == 1, results
    (w,) = winners
    assert w.takeover and w.generation == dead.generation + 1 and w.checkpoint == "at-dead" and w.run_id == "run-a"
    assert all(isinstance(r, Busy) and r.generation == w.generation for r in results if r is not w)


RACER = """
import json, sys, time
from hbwrap.lease_pg import LeaseStore, Acquired
url, me, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
with LeaseStore(url) as s:
    s.check()
    time.sleep(max(0.0, start - time.time()))
    got = s.acquire("race", me, me + ":1", "run-" + me, 30)
print(json.dumps({"acquired": isinstance(got, Acquired), "holder": getattr(got, "holder_host", me)}))
"""


def test_many_processes_acquiring_in_the_same_second_give_exactly_one_holder(pg):
    with LeaseStore(pg.url()) as s:
        take(s, job="warm-up")  # the table exists: the race is on the row alone
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", RACER, pg.url(), f"p{i}", str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    winners = [o for o in outs if o["acquired"]]
    assert len(winners) == 1, outs
    assert {o["holder"] for o in outs if not o["acquired"]} == {winners[0]["holder"]}


def test_fleet_lists_every_job_with_holder_generation_status_lease_and_progress(store):
    held = take(store, job="held", host="a")
    store.renew("held", held.generation, 30, status="running", checkpoint="page-3")
    done = take(store, job="done", host="b")
    store.release("done", done.generation, "succeeded", checkpoint="all")
    take(store, job="gone", host="c", lease_s=0.2)
    wait_until(lambda: {r.job: r.lease_state for r in store.fleet()}.get("gone") == "expired", timeout=10, every=0.05)

    rows = {r.job: r for r in store.fleet()}
    assert [r.job for r in store.fleet()] == ["done", "gone", "held"]
    assert (rows["held"].lease_state, rows["done"].lease_state, rows["gone"].lease_state) == ("held", "released", "expired")
    assert [r.job for r in store.fleet("held")] == ["held"] and store.fleet("nope") == []

    records = {r["name"]: r for r in json.loads(fleet.fleet_json(store.fleet()))}
    h = records["held"]
    assert (h["holder_host"], h["generation"], h["status"], h["lease"], h["checkpoint"]) == ("a", 1, "running", "held", "page-3")
    assert h["last_progress_at"].endswith("Z") and 0 <= h["lease_age_s"] < 30 and 0 < h["expires_in_s"] <= 30
    assert records["done"]["released_at"] and records["gone"]["expires_in_s"] < 0

    lines = fleet.fleet_text(store.fleet()).splitlines()
    assert lines[0].split() == ["JOB", "HOST", "GEN", "STATUS", "LEASE", "RENEWED", "CHECKPOINT", "LAST", "PROGRESS"]
    assert [ln.split()[0] for ln in lines[1:]] == ["held", "gone", "done"], "held leases first, finished runs last"
    assert "held," in lines[1] and "left" in lines[1] and "page-3" in lines[1]
    assert "expired" in lines[2] and "released" in lines[3]


def test_status_fleet_on_the_command_line(hb, store, pg):
    a = take(store, job="night-post", host="host-a")
    store.renew("night-post", a.generation, 30, status="running", checkpoint="draft-2")
    r = hb.run("status", "--fleet", "--lease-url", pg.url(), "--json")
    assert r.returncode == 0, r
    (rec,) = json.loads(r.out)
    assert (rec["name"], rec["holder_host"], rec["generation"], rec["checkpoint"], rec["lease"]) == \
        ("night-post", "host-a", 1, "draft-2", "held")
    env = dict(hb.env, HBWRAP_LEASE_URL=pg.url())
    r = hb.run("status", "--fleet", "night-post", env=env)
    assert r.returncode == 0 and "night-post" in r.out and "host-a" in r.out and "draft-2" in r.out, r
    r = hb.run("status", "--fleet", "other-job", env=env)
    assert r.returncode == 1 and r.err.count("\n") == 1 and "other-job" in r.err, r
    r = hb.run("status", "--fleet", "bad/name", env=env)
    assert r.returncode == 2, r
    r = hb.run("status", "--fleet")
    assert r.returncode == 2 and "--lease-url" in r.err, r
    r = hb.run("status", "--lease-url", pg.url())
    assert r.returncode == 2 and "--fleet" in r.err, r


def test_schema_from_hbwrap_schema_or_from_the_search_path(pg):
    mixed = pg.schema + "_Mixed"
    via_param = with_query(pg.base, hbwrap_schema=mixed)
    via_path = with_query(pg.base, options=f"-csearch_path%3D{pg.schema}")
    pg.sql(f'CREATE SCHEMA "{pg.schema}"', fetch=False)
    try:
        with LeaseStore(via_param) as s1, LeaseStore(via_path) as s2:
            assert isinstance(take(s1), Acquired)
            assert isinstance(take(s2, host="b"), Acquired), "two schemas are two independent stores"
            assert s1.table == f'"{mixed}"."hbwrap_leases"' and s2.table == f'"{pg.schema}"."hbwrap_leases"'
        placed = pg.sql("SELECT schemaname FROM pg_tables WHERE tablename = 'hbwrap_leases' AND schemaname IN (%s, %s) "
                        "ORDER BY 1", (mixed, pg.schema))
        assert sorted(p[0] for p in placed) == sorted([mixed, pg.schema])
    finally:
        pg.sql(f'DROP SCHEMA IF EXISTS "{mixed}" CASCADE', fetch=False)


def test_a_dropped_table_is_created_again_by_the_next_operation(pg, store):
    take(store)
    pg.sql(f'DROP TABLE "{pg.schema}".hbwrap_leases', fetch=False)
    with pytest.raises(lease_pg.LeaseStoreError, match="does not exist"):
        store.renew("j", 1, 30)
    assert isinstance(take(store), Acquired)


def test_one_statement_per_renewal_once_connected(store):
    a = take(store)
    before = store.statements
    for _ in range(5):
        store.renew("j", a.generation, 30, status="running", checkpoint="c")
    assert store.statements - before == 5


def test_a_checkpoint_of_any_text_is_stored_and_never_fails_a_renewal(store):
    a = take(store)
    odd = "page\x00-7 caf\u00e9 \udcff" + "x" * 10_000  # a NUL, a lone surrogate from surrogateescape, 10 kB
    assert store.renew("j", a.generation, 30, checkpoint=odd) > 0
    stored = store.fleet()[0].checkpoint
    assert stored.startswith("page\ufffd-7 caf\u00e9 ?") and len(stored) == lease_pg.MAX_TEXT


@pytest.mark.parametrize("lease_s", [0, -1, float("nan"), float("inf"), 1e12])
def test_a_nonsense_lease_is_refused_before_anything_is_sent(store, lease_s):
    with pytest.raises(ValueError, match="lease_s"):
        take(store, lease_s=lease_s)
    assert store.statements == 0
