"""The `--alert-cmd` runner: `sh -c CMD` in a process group of its own, the event in its environment, bounded.

The event reaches the command only through environment variables (SPEC §6), never spliced into its
text. Its output is kept (the last CMD_OUTPUT_BYTES, URLs masked) for the event log; a command that
outlives its timeout, or is still running when hbwrap gives up waiting at exit, is killed with its group.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time

from hbwrap.alerts.mask import mask_text, mask_urls_in
from hbwrap.alerts.messages import clean_text, fmt_duration
from hbwrap.alerts.webpost import DeliveryFailed

ENV_VALUE_MAX_CHARS = 64 * 1024    # below the kernel's 128 KiB limit for one environment string
CMD_OUTPUT_BYTES = 4096            # the alert command's output kept (alert_failed, or alert_output on success)
CMD_TERM_GRACE_S = 1.0             # timed-out alert command: SIGTERM to its group, then SIGKILL this much later
CMD_PIPE_LINGER_S = 0.5            # after the shell exits, read what its background children still write this long
_OWN_VARS = ("HBWRAP_EVENT", "HBWRAP_JOB", "HBWRAP_RUN_ID", "HBWRAP_ATTEMPT", "HBWRAP_REASON", "HBWRAP_EXIT_CODE",
             "HBWRAP_CHECKPOINT", "HBWRAP_EVENT_JSON", "HBWRAP_SUMMARY", "HBWRAP_INCIDENT")


class AlertCommand:
    """Runs the alert command for one event at a time (its lane's worker thread calls `run`).

    `lock` is the Alerter's: the running process is published and reaped under it, so `kill()` (called with
    the lock held) never signals a process group that may have been recycled.
    """

    def __init__(self, *, cmd: str, job: str, env: dict[str, str] | None, timeout_s: float, secrets: list[str],
                 lock: threading.RLock | threading.Condition, stop: threading.Event):
        self.cmd = cmd
        self.job = job
        self.env = env
        self.timeout_s = float(timeout_s)
        self._secrets = secrets
        self._lock = lock
        self._stop = stop
        self.proc: subprocess.Popen | None = None  # the command now running (guarded by lock)

    def kill(self) -> None:
        """SIGKILL the running command's group; the caller holds the lock."""
        if self.proc is not None:
            _kill_group(self.proc, signal.SIGKILL)

    def environment(self, event: dict) -> dict[str, str]:
        return alert_environment(os.environ if self.env is None else self.env, event, self.job)

    def run(self, event: dict) -> dict:
        """`sh -c CMD` with the event in its environment; DeliveryFailed on non-zero, signal or timeout."""
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", self.cmd], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.environment(event),
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise DeliveryFailed(f"cannot start alert command: {exc.strerror or exc}") from None
        with self._lock:
            self.proc = proc
        try:
            output, timed_out = self._collect(proc)
        finally:
            with self._lock:
                try:
                    proc.wait()
                finally:
                    self.proc = None
        text = mask_urls_in(mask_text(output.decode("utf-8", "replace"), self._secrets)).strip()
        code = proc.returncode
        if timed_out:
            raise DeliveryFailed(f"alert command timed out after {fmt_duration(self.timeout_s)} and was killed",
                                 output=text or None)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            raise DeliveryFailed(f"alert command killed by signal {name}", output=text or None)
        if code:
            raise DeliveryFailed(f"alert command exited with code {code}", cmd_exit_code=code, output=text or None)
        return {"output": text} if text else {}

    def _collect(self, proc: subprocess.Popen) -> tuple[bytes, bool]:
        """Read the command's output (keeping the last CMD_OUTPUT_BYTES) until it ends or times out.

        On return the shell has exited but is not reaped (the caller reaps it).
        """
        fd = proc.stdout.fileno()
        buf = bytearray()
        deadline = time.monotonic() + self.timeout_s
        exited_at = None
        eof = timed_out = False
        try:
            while True:
                now = time.monotonic()
                if exited_at is None and _exited(proc.pid):
                    exited_at = now
                if exited_at is not None:
                    # background children may hold the pipe open: read what they write for a moment only
                    if eof or now - exited_at >= CMD_PIPE_LINGER_S or self._stop.is_set():
                        break
                elif now >= deadline or self._stop.is_set():
                    timed_out = not self._stop.is_set()
                    self._stop_cmd(proc)
                    break
                wait = max(0.0, min(0.1, deadline - now))
                if eof:
                    self._stop.wait(min(wait, 0.05))
                    continue
                ready, _, _ = select.select([fd], [], [], wait)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        eof = True
                    else:
                        buf += chunk
                        if len(buf) > 2 * CMD_OUTPUT_BYTES:
                            del buf[:-CMD_OUTPUT_BYTES]
        finally:
            proc.stdout.close()
            if not _exited(proc.pid):  # only after an unexpected error above
                self._stop_cmd(proc)
        return bytes(buf[-CMD_OUTPUT_BYTES:]), timed_out

    def _stop_cmd(self, proc: subprocess.Popen) -> None:
        """SIGTERM the command's process group, SIGKILL it CMD_TERM_GRACE_S later (at once when abandoned).

        The shell is never reaped here: as a zombie it keeps its pgid from being reused, so both signals
        reach the group we started and nothing else.
        """
        _kill_group(proc, signal.SIGTERM)
        end = time.monotonic() + (0.0 if self._stop.is_set() else CMD_TERM_GRACE_S)
        while not _exited(proc.pid) and time.monotonic() < end and not self._stop.is_set():
            self._stop.wait(0.02)
        _kill_group(proc, signal.SIGKILL)  # also whatever the shell left behind in its group
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass


def env_value(v) -> str:
    """An event field as an environment value: text, cleaned, no NUL, bounded."""
    text = "" if v is None else str(v)
    return clean_text(text).replace("\0", "")[:ENV_VALUE_MAX_CHARS]


def alert_environment(base: dict[str, str], event: dict, job: str) -> dict[str, str]:
    """`base` with the event's HBWRAP_* variables (SPEC §6), and none a nested hbwrap left in `base`.

    Also the environment of --restart-check (with HBWRAP_RESUME_FROM added by its caller).
    """
    env = dict(base)
    for key in _OWN_VARS:
        env.pop(key, None)  # a nested hbwrap must not leak its own values into ours
    env.update({
        "HBWRAP_EVENT": env_value(event.get("event")), "HBWRAP_JOB": env_value(event.get("job") or job),
        "HBWRAP_RUN_ID": env_value(event.get("run_id")), "HBWRAP_ATTEMPT": env_value(event.get("attempt")),
        "HBWRAP_REASON": env_value(event.get("reason")), "HBWRAP_CHECKPOINT": env_value(event.get("checkpoint")),
        "HBWRAP_SUMMARY": env_value(event.get("summary")),
        "HBWRAP_EVENT_JSON": env_value(json.dumps(event, ensure_ascii=False)),
    })
    if event.get("exit_code") is not None:
        env["HBWRAP_EXIT_CODE"] = env_value(event["exit_code"])
    if event.get("incident_path"):
        env["HBWRAP_INCIDENT"] = env_value(event["incident_path"])
    return env


def _exited(pid: int) -> bool:
    """Whether our child `pid` has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # reaped already (e.g. by a PID-1 supervisor's stray reaper)


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the group start_new_session made for `proc`; callers ensure the leader is not reaped yet."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
