"""The `--restart-check` command: `sh -c CMD` in a process group of its own, with the alert environment plus
HBWRAP_RESUME_FROM. Its exit is seen through a pidfd in the supervisor's one poll and its output read from a
non-blocking pipe in the same poll — it is never waited for; policy kills it at its limit (gates.py).
What it printed is kept like an alert command's: the last CHECK_OUTPUT_BYTES, URLs and secrets masked.
"""
from __future__ import annotations

import os
import signal
import subprocess

from hbwrap import procs
from hbwrap.alerts.alertcmd import CMD_OUTPUT_BYTES, alert_environment, env_value
from hbwrap.alerts.mask import mask_text, mask_urls_in
from hbwrap.model import RunRecord, iso
from hbwrap.options import RunOptions

CHECK_OUTPUT_BYTES = CMD_OUTPUT_BYTES
_READS_PER_WAKE = 16


def check_environment(base: dict[str, str], opts: RunOptions, rec: RunRecord, now_wall: float,
                      resume_from: str | None, reason: str | None, exit_code: int | None) -> dict[str, str]:
    """What the check sees (SPEC §3): hbwrap's own environment, the alert variables of a `restart_check` event
    about the attempt that ended (why, the exit code the run would end with), and HBWRAP_RESUME_FROM exactly
    when the next attempt will get it."""
    event = {"ts": iso(now_wall), "job": opts.name, "run_id": rec.run_id, "attempt": rec.attempt,
             "event": "restart_check", "reason": reason, "exit_code": exit_code, "checkpoint": rec.checkpoint}
    env = alert_environment(base, event, opts.name)
    env.pop("HBWRAP_RESUME_FROM", None)
    if resume_from is not None:
        env["HBWRAP_RESUME_FROM"] = env_value(resume_from)
    return env


def secrets_of(opts: RunOptions) -> list[str]:
    """URLs whose credentials must not appear in the check's recorded output."""
    return [u for u in (*opts.alert_webhooks, opts.ping_url, opts.lease_url) if u]


class RestartCheck:
    """One run of the check. `result(ready)` is its outcome once it has exited (then it is reaped and closed)."""

    def __init__(self, proc: subprocess.Popen | None, secrets: list[str], error: str | None = None):
        self.proc = proc
        self.secrets = secrets
        self.error = error
        self.pid = proc.pid if proc is not None else None
        self.start_time = procs.start_time(proc.pid) if proc is not None else None
        self.pidfd = procs.pidfd_open(proc.pid) if proc is not None else None
        self.out_fd = proc.stdout.fileno() if proc is not None else None
        if self.out_fd is not None:
            os.set_blocking(self.out_fd, False)
        self.buf = bytearray()
        self.killed = False

    @classmethod
    def start(cls, command: str, env: dict[str, str], cwd: str, secrets: list[str]) -> "RestartCheck":
        """Never raises: a check that cannot be started is a check that did not pass."""
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=cwd,
                                    close_fds=True)
        except OSError as exc:
            return cls(None, secrets, error=exc.strerror or str(exc))
        return cls(proc, secrets)

    # --- observing --------------------------------------------------------------------------------
    def fds(self) -> list[int]:
        return [fd for fd in (self.pidfd, self.out_fd) if fd is not None]

    @property
    def polled(self) -> bool:
        """No pidfd (an old kernel): the supervisor looks at the check at its poll fallback's pace."""
        return self.proc is not None and self.pidfd is None

    @property
    def done(self) -> bool:
        """Its outcome is known without waiting (it could not be started)."""
        return self.proc is None

    def pump(self) -> None:
        """Read what its output pipe holds now (never blocks); keep the last CHECK_OUTPUT_BYTES."""
        for _ in range(_READS_PER_WAKE):
            if self.out_fd is None:
                return
            try:
                chunk = os.read(self.out_fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.proc.stdout.close()
                self.out_fd = None
                return
            self.buf += chunk
            if len(self.buf) > 2 * CHECK_OUTPUT_BYTES:
                del self.buf[:-CHECK_OUTPUT_BYTES]

    def result(self, ready: set[int]) -> dict | None:
        """The outcome once the shell has exited, else None: exit_code or signal, timed_out, output."""
        if self.proc is None:
            return {"error": self.error}
        if self.out_fd is not None and self.out_fd in ready:
            self.pump()
        if not (self.pidfd is None or self.pidfd in ready or self.killed) or not _exited(self.proc.pid):
            return None
        # the shell is a zombie, so its group id cannot be reused yet: whatever it left behind dies with it
        procs.killpg_quietly(self.proc.pid, signal.SIGKILL)
        self.pump()
        code = self.proc.wait()
        self.close()
        text = mask_urls_in(mask_text(bytes(self.buf[-CHECK_OUTPUT_BYTES:]).decode("utf-8", "replace"),
                                      self.secrets)).strip()
        out = {"exit_code": code} if code >= 0 else {"signal": -code}
        return {**out, "timed_out": self.killed, "output": text}

    # --- acting -----------------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL its group; its exit then arrives through the pidfd like any other."""
        if self.proc is not None and self.proc.returncode is None:
            procs.killpg_quietly(self.proc.pid, signal.SIGKILL)
            self.killed = True

    def close(self) -> None:
        """At the end of a supervisor: nothing of the check is left, no descriptor open."""
        if self.proc is not None and self.proc.returncode is None:
            procs.killpg_quietly(self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.out_fd is not None:
            self.proc.stdout.close()
            self.out_fd = None


def _exited(pid: int) -> bool:
    """Whether our child `pid` has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True
