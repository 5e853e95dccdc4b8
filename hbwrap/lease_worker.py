"""Lease operations on one background thread, so that the supervisor's single poll loop never waits on the network.

    worker = LeaseWorker(store)                  # store: a LeaseStore (or anything with its methods)
    worker.submit_renew(job, generation, lease_s, status="running", checkpoint="page-3")
    poll.register(worker.fileno(), POLLIN)       # readable once a result is ready
    for result in worker.results(): ...          # LeaseResult: valid_until, or lost, or error

Requests never pile up: at most one operation runs, and at most one of each kind waits per job. A renewal
submitted while another waits replaces it (status, checkpoint and attempt merged, newest first); a pending
checkpoint rides along with a pending renewal; a release absorbs both and is the job's last operation.
What an operation that got no answer carried (status, checkpoint, attempt) rides along with the job's next
one of the same generation, so a checkpoint is not lost to a network blip.
`LeaseResult.valid_until` is on `lease_rules.lease_clock`, read just before the operation was sent, which
is what makes it a safe lower bound of the real expiry (see hbwrap/lease_rules.py).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace

from hbwrap.errors import LeaseStoreError
from hbwrap.lease_rules import lease_clock

KINDS = ("renew", "checkpoint", "release")  # the order pending operations of one job are run in


@dataclass(frozen=True)
class _Request:
    kind: str
    job: str
    generation: int
    lease_s: float | None = None
    status: str | None = None
    checkpoint: str | None = None
    attempt: int | None = None
    carried: int = 1  # submissions this request stands for


@dataclass(frozen=True)
class LeaseResult:
    """The outcome of one operation the worker ran."""

    op: str                      # renew | checkpoint | release
    job: str
    generation: int
    sent_at: float               # lease clock just before the operation started
    finished_at: float
    valid_until: float | None    # renew/checkpoint accepted: sent_at + the server's valid_for_s
    lost: object | None          # lease_pg.Lost: the lease is not ours any more
    error: Exception | None      # a LeaseStoreError: no answer or refused, the lease's state is unknown
    carried: int                 # how many submissions this one operation carried

    @property
    def ok(self) -> bool:
        return self.lost is None and self.error is None


def _merge(old: _Request | None, new: _Request) -> _Request:
    """`new`, with what only `old` said (a checkpoint, a status) kept, when both are for one generation."""
    if old is None or old.generation != new.generation:
        return new
    return replace(new, status=new.status if new.status is not None else old.status,
                   checkpoint=new.checkpoint if new.checkpoint is not None else old.checkpoint,
                   attempt=new.attempt if new.attempt is not None else old.attempt,
                   carried=old.carried + new.carried)


class LeaseWorker:
    """One daemon thread running a lease store's renew / set_checkpoint / release for a poll loop."""

    def __init__(self, store, clock=lease_clock):
        self.store = store
        self._clock = clock
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._cond = threading.Condition()
        self._pending: dict[tuple[str, str], _Request] = {}
        self._released: set[str] = set()
        self._unsent: dict[str, _Request] = {}  # by job: what the last failed operation carried
        self._running: _Request | None = None
        self._done: list[LeaseResult] = []
        self._bug: BaseException | None = None
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="hbwrap-lease", daemon=True)
        self._thread.start()

    # --- the poll loop's side -----------------------------------------------------------------------
    def fileno(self) -> int:
        """A descriptor that is readable while results wait in `results()`."""
        return self._read_fd

    def submit_renew(self, job: str, generation: int, lease_s: float, *, status: str | None = None,
                     checkpoint: str | None = None, attempt: int | None = None) -> None:
        self._submit(_Request("renew", job, generation, float(lease_s), status, checkpoint, attempt))

    def submit_checkpoint(self, job: str, generation: int, checkpoint: str) -> None:
        self._submit(_Request("checkpoint", job, generation, checkpoint=checkpoint))

    def submit_release(self, job: str, generation: int, status: str, *, checkpoint: str | None = None,
                       attempt: int | None = None) -> None:
        self._submit(_Request("release", job, generation, status=status, checkpoint=checkpoint, attempt=attempt))

    def results(self) -> list[LeaseResult]:
        """The results finished since the last call (oldest first); re-raises a bug of the worker thread."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        with self._cond:
            done, self._done = self._done, []
            bug, self._bug = self._bug, None
        if bug is not None:
            raise bug
        return done

    def busy(self) -> bool:
        """True while an operation runs or waits."""
        with self._cond:
            return self._running is not None or bool(self._pending)

    def drain(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for every submitted operation to finish; True if none is left."""
        with self._cond:
            return self._cond.wait_for(lambda: self._running is None and not self._pending, timeout_s)

    def close(self, timeout_s: float = 0.0) -> None:
        """Stop the thread: what has not started is dropped; a running operation ends within its store's bound."""
        with self._cond:
            self._stopping = True
            self._pending.clear()
            self._cond.notify_all()
        self._thread.join(timeout_s)
        with self._cond:  # the thread writes to the pipe only under this lock, and not once closed
            if not self._closed:
                self._closed = True
                os.close(self._read_fd)
                os.close(self._write_fd)

    # --- the thread ---------------------------------------------------------------------------------
    def _submit(self, req: _Request) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("LeaseWorker is closed")
            if req.job in self._released:
                raise RuntimeError(f"lease of {req.job} already released")
            req = self._with_unsent(req)
            if req.kind == "release":
                self._released.add(req.job)
                for kind in ("renew", "checkpoint"):  # a release carries their checkpoint and ends the run
                    absorbed = self._pending.pop((kind, req.job), None)
                    if absorbed is not None and absorbed.generation == req.generation:
                        req = replace(req, checkpoint=req.checkpoint if req.checkpoint is not None else absorbed.checkpoint,
                                      attempt=req.attempt if req.attempt is not None else absorbed.attempt,
                                      carried=req.carried + absorbed.carried)
            elif req.kind == "renew":
                req = _merge(self._pending.pop(("checkpoint", req.job), None), req)
            elif ("renew", req.job) in self._pending:
                key = ("renew", req.job)
                pending = self._pending[key]
                if pending.generation == req.generation:
                    self._pending[key] = replace(pending, checkpoint=req.checkpoint, carried=pending.carried + 1)
                    return
            key = (req.kind, req.job)
            self._pending[key] = _merge(self._pending.get(key), req)
            self._cond.notify_all()

    def _with_unsent(self, req: _Request) -> _Request:
        """Under self._cond: `req` carrying what the job's failed operations could not store."""
        unsent = self._unsent.pop(req.job, None)
        if unsent is None or unsent.generation != req.generation:
            return req
        if req.kind == "checkpoint":  # it stores the newer checkpoint itself; status and attempt wait on
            self._unsent[req.job] = replace(unsent, checkpoint=None)
            return req
        return _merge(replace(unsent, carried=0), req)

    def _carry_over(self, failed: _Request) -> None:
        """Under self._cond: keep a failed operation's fields for a waiting renewal or release, else for later."""
        if failed.kind == "release":
            return  # the caller decides what to do about an unconfirmed release (submitting is closed)
        for kind in ("renew", "release"):
            key = (kind, failed.job)
            waiting = self._pending.get(key)
            if waiting is not None and waiting.generation == failed.generation:
                self._pending[key] = _merge(replace(failed, carried=0), waiting)
                return
        self._unsent[failed.job] = _merge(self._unsent.get(failed.job), replace(failed, carried=0))

    def _next(self) -> _Request | None:
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._stopping)
            if self._stopping:
                return None
            key = min(self._pending, key=lambda k: KINDS.index(k[0]))
            self._running = self._pending.pop(key)
            return self._running

    def _loop(self) -> None:
        while True:
            req = self._next()
            if req is None:
                return
            sent_at = self._clock()
            valid_until = lost = error = None
            try:
                got = self._call(req)
                if isinstance(got, float):
                    valid_until = sent_at + got
                elif got is not None:
                    lost = got
            except LeaseStoreError as exc:  # an outcome (the store did not answer), not a bug
                error = exc
                with self._cond:
                    self._carry_over(req)
            except BaseException as exc:  # a bug: hand it to the loop's thread with its traceback
                with self._cond:
                    self._bug = exc
                    self._finish(None)
                continue
            result = LeaseResult(req.kind, req.job, req.generation, sent_at, self._clock(), valid_until,
                                 lost, error, req.carried)
            with self._cond:
                self._finish(result)

    def _call(self, req: _Request):
        if req.kind == "renew":
            return self.store.renew(req.job, req.generation, req.lease_s, status=req.status,
                                    checkpoint=req.checkpoint, attempt=req.attempt)
        if req.kind == "checkpoint":
            return self.store.set_checkpoint(req.job, req.generation, req.checkpoint)
        return self.store.release(req.job, req.generation, req.status, checkpoint=req.checkpoint,
                                  attempt=req.attempt)

    def _finish(self, result: LeaseResult | None) -> None:
        """Under self._cond: publish a result (or a bug) and wake the poll loop and drain()."""
        if result is not None:
            self._done.append(result)
        self._running = None
        self._cond.notify_all()
        if not self._closed:
            try:
                os.write(self._write_fd, b"!")
            except BlockingIOError:
                pass  # the pipe is full, so it is readable already
