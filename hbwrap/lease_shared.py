"""The supervisor's side of a lease in PostgreSQL (--lease-url): claiming the row before a run, renewing it
through the worker thread (never blocking the loop), releasing it when the run is over.

psycopg is imported only here and only when a lease URL is used (hbwrap.lease_pg)."""
from __future__ import annotations

from hbwrap.lease_rules import lease_clock, op_timeout_s, valid_until
from hbwrap.lease_url import default_host, new_holder_id
from hbwrap.options import RunOptions

RELEASE_WAIT_S = 5.0  # at the end of the run, for the release to reach the database


class SharedLease:
    def __init__(self, opts: RunOptions):
        from hbwrap.lease_pg import LeaseStore

        self.opts = opts
        self.host = opts.host or default_host()
        self.store = LeaseStore(opts.lease_url, timeout_s=op_timeout_s(opts.lease_s))
        self.worker = None
        self.holder: str | None = None
        self.generation: int | None = None
        self.run_id: str | None = None
        self.released = False

    def claim(self, holder: str | None, run_id: str):
        """Take the row (synchronously: no run exists yet, one bounded operation): Acquired or Busy.

        `holder` is the recorded holder id of a run of this host being taken over locally (so the row is
        still "ours"), or None for a new holder. Raises LeaseStoreError (exit 125) when it cannot be used.
        """
        self.holder = holder or new_holder_id(self.host)
        self.run_id = run_id
        sent = lease_clock()
        got = self.store.acquire(self.opts.name, self.host, self.holder, run_id, self.opts.lease_s)
        if hasattr(got, "generation") and hasattr(got, "valid_for_s"):
            self.generation, self.run_id = got.generation, got.run_id
            self.valid_until, self.sent_at = valid_until(sent, got.valid_for_s), sent
        return got

    def start(self) -> None:
        from hbwrap.lease_worker import LeaseWorker

        self.worker = LeaseWorker(self.store, clock=lease_clock)

    def fd(self) -> int | None:
        return self.worker.fileno() if self.worker is not None else None

    def results(self) -> list[tuple]:
        """The worker's finished operations, as policy.Observations.lease_results."""
        out = []
        for r in self.worker.results() if self.worker is not None else ():
            if r.op == "release":
                continue
            if r.lost is not None:
                out.append(("lost", r.lost.describe(), r.finished_at))
            elif r.error is not None:
                out.append(("error", str(r.error), r.finished_at))
            elif r.valid_until is not None:
                out.append(("ok", r.valid_until, r.sent_at))
        return out

    def renew(self, status: str | None, checkpoint: str | None, attempt: int | None) -> None:
        self.worker.submit_renew(self.opts.name, self.generation, self.opts.lease_s, status=status,
                                 checkpoint=checkpoint, attempt=attempt)

    def release(self, status: str, checkpoint: str | None, attempt: int | None) -> None:
        if not self.released:
            self.released = True
            self.worker.submit_release(self.opts.name, self.generation, status, checkpoint=checkpoint,
                                       attempt=attempt)

    def busy(self) -> bool:
        return self.worker is not None and self.worker.busy()

    def close(self) -> None:
        if self.worker is not None:
            if self.released:
                self.worker.drain(RELEASE_WAIT_S)
            self.worker.close()
        self.store.close()
