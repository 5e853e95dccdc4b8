"""Exclusion and liveness of a job's supervisor: the job lock, the lease in state.json, and fencing by generation."""
from __future__ import annotations

import fcntl
import os
import signal
import time

from hbwrap import procs
from hbwrap.errors import HbwrapError, StateError
from hbwrap.jobfiles import open_job_file
from hbwrap.jobstore import JobDir
from hbwrap.leasecheck import lease_expired, read_only, renewed_at  # noqa: F401 (lease.* for callers)
from hbwrap.model import fmt_s

HUNG_KILL_WAIT_S = 5.0


class SteppedDown(HbwrapError):
    """A newer supervisor took the job over while this one was hung: leave everything to it."""

    exit_code = 75


def stderr_line(text: str) -> None:
    """One `hbwrap: ` line straight to stderr (before or outside a supervisor's own voice)."""
    try:
        os.write(2, f"hbwrap: {text}\n".encode(errors="replace"))
    except OSError:
        pass


def read_holder(job: JobDir) -> dict | None:
    """The recorded supervisor document, or None when there is none or it cannot be read."""
    try:
        return job.read_state()
    except StateError:
        return None


def kill_hung_holder(job: JobDir, name: str, default_lease_s: float) -> int | None:
    """Kill the lock holder if its lease has expired (identity verified first); its pid if one was killed."""
    holder = read_holder(job)
    if not holder or not lease_expired(holder, time.time(), default_lease_s, job):
        return None
    pid, start = holder.get("supervisor_pid"), holder.get("supervisor_start")
    if not isinstance(pid, int) or not isinstance(start, int) or pid == os.getpid():
        return None
    if not procs.is_supervisor(pid, start) or not procs.kill_quietly(pid, signal.SIGKILL):
        return None
    late = time.time() - (renewed_at(holder, job) or 0.0) - (holder.get("lease_s") or default_lease_s)
    stderr_line(f"supervisor pid {pid} of job {name} is hung (lease expired {fmt_s(late)} ago); killed it to "
             f"take over")
    end = time.monotonic() + HUNG_KILL_WAIT_S
    while procs.is_same_process(pid, start) and time.monotonic() < end:
        time.sleep(0.01)
    return pid


class JobLock:
    """The job's exclusive lock, held for the supervisor's whole life (the kernel drops it when we die).

    flock(2) on `lock` in the job dir, opened as every job file is (no symlink, a regular file of ours,
    close-on-exec, so no command or keeper ever holds it). This is all filelock would do for us on
    Linux, and importing filelock 4 costs 15-30 ms, more than the rest of a `hbwrap run -- true`.
    """

    WAIT_POLL_S = 0.05

    def __init__(self, job: JobDir, name: str, lease_s: float, verbose: bool = False):
        self.job, self.name, self.lease_s, self.verbose = job, name, lease_s, verbose
        self.killed_hung: int | None = None
        self._fd: int | None = None

    def _try(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._fd = fd
        return True

    def _wait(self, fd: int, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not self._try(fd):
            if time.monotonic() >= end:
                return False
            time.sleep(self.WAIT_POLL_S)
        return True

    def acquire(self, if_running: str, takeover_only: bool) -> int | None:
        """Take the lock: None when held, else the exit code for a busy job (SPEC §3 --if-running, §4 watch).

        A holder whose lease expired is hung: it is killed (after verifying its identity) and the lock
        taken over, whatever --if-running says.
        """
        try:
            fd = open_job_file(self.job.lock_file, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise StateError(f"cannot lock {self.job.lock_file}: {exc.strerror or exc}") from None
        try:
            code = self._acquire(fd, if_running, takeover_only)
        except BaseException:
            os.close(fd)
            raise
        if code is not None:
            os.close(fd)
        return code

    def _acquire(self, fd: int, if_running: str, takeover_only: bool) -> int | None:
        waited = False
        while True:
            try:
                if self._try(fd):
                    return None
            except OSError as exc:
                raise StateError(f"cannot lock {self.job.lock_file}: {exc.strerror or exc}") from None
            killed = kill_hung_holder(self.job, self.name, self.lease_s)
            if killed is not None:
                self.killed_hung = killed
                continue
            holder = read_holder(self.job) or {}
            who = f" (supervisor pid {holder['supervisor_pid']})" if holder.get("supervisor_pid") else ""
            if takeover_only:
                stderr_line(f"job {self.name} has a live supervisor{who}; nothing to take over")
                return 75
            if if_running == "skip":
                if self.verbose:
                    stderr_line(f"job {self.name} is already running{who}; skipping this run")
                return 0
            if if_running == "fail":
                stderr_line(f"job {self.name} is already running{who}")
                return 75
            if not waited and self.verbose:
                stderr_line(f"job {self.name} is already running{who}; waiting for it to finish")
            waited = True
            if self._wait(fd, max(0.1, min(1.0, self.lease_s / 3))):
                return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the open file drops the flock
            self._fd = None


def check_fence(job: JobDir, run_id: str, generation: int) -> None:
    """Raise SteppedDown if a newer supervisor has taken this run over (its generation is higher)."""
    on_disk = read_holder(job)
    if not on_disk or on_disk.get("run_id") != run_id:
        return
    theirs = on_disk.get("generation")
    if isinstance(theirs, int) and theirs > generation:
        raise SteppedDown(f"job {job.name} was taken over by supervisor pid {on_disk.get('supervisor_pid')}; "
                          f"stepping down without touching the command")
