"""LeaseWorker: lease operations off the poll loop, results through a pipe, requests coalesced, never piling up."""
from __future__ import annotations

import select
import threading
import time
from urllib.parse import urlsplit

import pytest

from conftest import wait_until
from hbwrap.errors import LeaseUnreachable
from hbwrap.lease_worker import LeaseWorker


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


class GatedStore:
    """A lease store whose operations wait for the test to open the gate, and answer what it is told."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.answer = 30.0

    def _op(self, *call):
        self.calls.append(call)
        self.entered.release()
        assert self.gate.wait(10), "the test never opened the gate"
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def renew(self, job, generation, lease_s, status=None, checkpoint=None, attempt=None):
        return self._op("renew", job, generation, lease_s, status, checkpoint, attempt)

    def set_checkpoint(self, job, generation, checkpoint):
        return self._op("checkpoint", job, generation, checkpoint)

    def release(self, job, generation, status, checkpoint=None, attempt=None):
        self._op("release", job, generation, status, checkpoint, attempt)
        return None


@pytest.fixture
def store():
    s = GatedStore()
    yield s
    s.gate.set()


@pytest.fixture
def worker(store):
    clock = iter(range(100, 10_000)).__next__
    w = LeaseWorker(store, clock=lambda: float(clock()))
    yield w
    w.close(5)


def test_renewals_submitted_while_one_hangs_are_coalesced_into_one(store, worker):
    worker.submit_renew("j", 3, 30, status="running", checkpoint="c0")
    assert store.entered.acquire(timeout=5)
    for i in range(1, 50):  # the first one hangs in the store: none of these may block or queue up
        worker.submit_renew("j", 3, 30, checkpoint=f"c{i}", status="backoff" if i == 20 else None)
    worker.submit_checkpoint("j", 3, "c-last")
    worker.submit_renew("j", 3, 30, attempt=2)
    assert worker.busy() and not readable(worker.fileno())
    store.gate.set()
    assert worker.drain(10)
    results = worker.results()
    assert [r.carried for r in results] == [1, 51]
    assert store.calls == [("renew", "j", 3, 30.0, "running", "c0", None),
                           ("renew", "j", 3, 30.0, "backoff", "c-last", 2)]
    assert all(r.ok and r.valid_until == r.sent_at + 30.0 for r in results)


def test_the_pipe_is_readable_exactly_while_results_wait(store, worker):
    store.gate.set()
    assert not readable(worker.fileno()) and worker.results() == []
    worker.submit_renew("j", 1, 30)
    wait_until(lambda: readable(worker.fileno()), timeout=5, what="the result pipe readable")
    (result,) = worker.results()
    assert (result.op, result.job, result.generation, result.ok) == ("renew", "j", 1, True)
    assert not readable(worker.fileno())


def test_valid_until_counts_from_the_clock_read_before_the_operation(store, worker):
    store.answer = 29.5
    store.gate.set()
    worker.submit_renew("j", 1, 30)
    assert worker.drain(5)
    (r,) = worker.results()
    assert r.finished_at > r.sent_at and r.valid_until == r.sent_at + 29.5


def test_lost_and_store_errors_are_results_and_a_bug_is_raised_in_the_caller(store, worker):
    from hbwrap.lease_pg import Lost

    store.gate.set()
    store.answer = Lost("j", "taken", 9, "b")
    worker.submit_renew("j", 1, 30)
    assert worker.drain(5)
    (r,) = worker.results()
    assert r.lost == store.answer and r.valid_until is None and not r.ok
    store.answer = LeaseUnreachable("lease store postgresql://x: no answer within 5s")
    worker.submit_checkpoint("j", 1, "c")
    assert worker.drain(5)
    (r,) = worker.results()
    assert r.op == "checkpoint" and r.error is store.answer and not r.ok
    store.answer = ZeroDivisionError("a bug")
    worker.submit_renew("j", 1, 30)
    assert worker.drain(5)
    with pytest.raises(ZeroDivisionError):
        worker.results()


def test_a_release_absorbs_what_waits_and_ends_the_job(store, worker):
    worker.submit_renew("j", 4, 30)
    assert store.entered.acquire(timeout=5)
    worker.submit_checkpoint("j", 4, "c9")
    worker.submit_release("j", 4, "succeeded")
    with pytest.raises(RuntimeError, match="released"):
        worker.submit_renew("j", 4, 30)
    store.gate.set()
    assert worker.drain(5)
    assert [r.op for r in worker.results()] == ["renew", "release"]
    assert store.calls[-1] == ("release", "j", 4, "succeeded", "c9", None)


def test_what_a_failed_operation_carried_rides_along_with_the_next(store, worker):
    store.gate.set()
    store.answer = LeaseUnreachable("lease store postgresql://x: no answer within 5s")
    worker.submit_renew("j", 2, 30, status="running", checkpoint="c5")
    assert worker.drain(5)
    store.answer = 30.0
    worker.submit_renew("j", 2, 30, attempt=3)
    assert worker.drain(5)
    assert store.calls[-1] == ("renew", "j", 2, 30.0, "running", "c5", 3)
    worker.submit_renew("j", 2, 30)
    assert worker.drain(5)
    assert store.calls[-1] == ("renew", "j", 2, 30.0, None, None, None), "carried once, then stored"
    store.answer = LeaseUnreachable("lease store postgresql://x: no answer within 5s")
    worker.submit_renew("j", 2, 30, status="backoff", checkpoint="c6")
    assert worker.drain(5)
    store.answer = 30.0
    worker.submit_checkpoint("j", 2, "c7")
    assert worker.drain(5)
    worker.submit_renew("j", 2, 30)
    assert worker.drain(5)
    assert store.calls[-2:] == [("checkpoint", "j", 2, "c7"), ("renew", "j", 2, 30.0, "backoff", None, None)], \
        "an older unsent checkpoint never overwrites a newer stored one"
    store.answer = LeaseUnreachable("lease store postgresql://x: no answer within 5s")
    worker.submit_checkpoint("j", 2, "c8")
    assert worker.drain(5)
    store.answer = 30.0
    worker.submit_renew("j", 3, 30)  # a new generation (taken again): the old one's fields are void
    assert worker.drain(5)
    assert store.calls[-1] == ("renew", "j", 3, 30.0, None, None, None)


def test_close_does_not_wait_for_a_hung_operation(store):
    w = LeaseWorker(store)
    w.submit_renew("j", 1, 30)
    assert store.entered.acquire(timeout=5)
    w.submit_renew("j", 1, 30)
    w.close(0)  # returns at once; the thread ends when the store's own bound ends the operation
    with pytest.raises(RuntimeError):
        w.submit_renew("j", 1, 30)
    store.gate.set()
    wait_until(lambda: not w._thread.is_alive(), timeout=5, what="the worker thread ending")
    assert len(store.calls) == 1, "what had not started when closing is dropped"


# --- against the real server ------------------------------------------------------------------------

from helpers.pgtest import pg, pg_server  # noqa: E402,F401 (fixtures)
from helpers.tcpproxy import TcpProxy  # noqa: E402


def test_real_renewals_and_a_black_hole_do_not_block_the_submitter(pg, pg_server):
    from hbwrap.lease_pg import Acquired, LeaseStore
    from hbwrap.lease_rules import lease_clock

    parts = urlsplit(pg_server)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy, \
            LeaseStore(proxy.url(pg.url()), timeout_s=1.0) as store:
        got = store.acquire("j", "a", "a:1", "r", 30)
        assert isinstance(got, Acquired)
        worker = LeaseWorker(store)
        try:
            before = lease_clock()
            worker.submit_renew("j", got.generation, 30, status="running", checkpoint="p1")
            assert worker.drain(10)
            (ok,) = worker.results()
            assert ok.ok and before <= ok.sent_at and ok.sent_at + 29 < ok.valid_until <= ok.sent_at + 30
            assert store.fleet()[0].checkpoint == "p1"

            proxy.cut("blackhole")
            t0 = time.monotonic()
            for i in range(20):
                worker.submit_renew("j", got.generation, 30, checkpoint=f"p{i + 2}")
            assert time.monotonic() - t0 < 0.5, "submitting never waits for the network"
            wait_until(lambda: readable(worker.fileno()), timeout=5, what="the failed renewal's result")
            failed = worker.results()
            assert failed and not failed[0].ok and isinstance(failed[0].error, LeaseUnreachable)
            assert "no answer within 1s" in str(failed[0].error) or "cannot connect" in str(failed[0].error)
            assert worker.drain(10)  # the coalesced renewal fails as well, on its reconnect
            assert not any(r.ok for r in worker.results())
            proxy.restore()
            worker.submit_renew("j", got.generation, 30)
            assert worker.drain(10)
            (last,) = worker.results()
            assert last.ok, last
            assert store.fleet()[0].checkpoint == "p21", "the newest checkpoint rides on until it is stored"
        finally:
            worker.close(5)
