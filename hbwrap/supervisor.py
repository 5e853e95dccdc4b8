"""The supervisor: one loop that turns observations (output, files, probes, exits, signals) into actions."""
from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hbwrap import policy, procs
from hbwrap.errors import HbwrapError, StateError
from hbwrap.jobstore import JobDir, StateDir, iso, new_run_id, write_json_atomic
from hbwrap.model import SCHEMA_VERSION, AttemptEnd, DecisionKind, Event, Status, StallReason
from hbwrap.options import RunOptions, compile_pattern, signal_name
from hbwrap.output import (STDERR, STDOUT, LogFollower, MarkerScanner, Passthrough, log_position)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
HANDSHAKE_TIMEOUT_S = 30.0
STATE_FLUSH_S = 1.0           # liveness fields reach state.json at most this late
STATE_RENEW_S = 10.0          # an idle supervisor still rewrites its record this often
CHECKPOINT_EVENT_SPACING_S = 0.5
KILL_FALLBACK_S = 5.0         # beyond --grace: if the keeper has not finished the kill, do it ourselves
PUMP_BUDGET = 8 * 1024 * 1024  # bytes of output handled before deadlines are looked at again
POLL_FALLBACK_S = 0.1         # only when inotify is unavailable


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


@dataclass
class _Child:
    keeper: subprocess.Popen
    keeper_start: int | None
    pid: int
    start: int | None
    pidfd: int | None


def _message(text: str) -> None:
    try:
        os.write(2, f"hbwrap: {text}\n".encode(errors="replace"))
    except OSError:
        pass


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.3g}s" if seconds < 100 else f"{seconds:.0f}s"


def _last_nonempty_line(path: Path) -> tuple[bytes | None, str | None]:
    """(content tail, last non-empty line) of a checkpoint file; (None, None) if absent."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            content = f.read()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None, None
    for line in reversed(content.splitlines()):
        text = line.decode("utf-8", "replace").strip()
        if text:
            return content, text
    return content, None


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class Supervisor:
    """Runs one job to its end: attempts, deadlines, kills, restarts, events and state."""

    def __init__(self, opts: RunOptions, *, clock=time.monotonic, wall=time.time, rng: random.Random | None = None,
                 stdout_fd: int = 1, stderr_fd: int = 2):
        self.opts = opts
        self.clock, self.wall = clock, wall
        self.rng = rng or random.Random()
        self.state_dir = StateDir(opts.state_dir)
        self.job: JobDir = self.state_dir.job(opts.name)
        self.passthrough = Passthrough(opts.quiet, stdout_fd, stderr_fd)
        self.messages: list[str] = []
        self.signals: list[int] = []
        self.ignored_signals = [int(s) for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                                                 signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
                                if signal.getsignal(s) == signal.SIG_IGN]
        self.progress_patterns = [compile_pattern(p, "--progress-pattern") for p in opts.progress_patterns]
        self.fatal_patterns = [compile_pattern(p, "--fatal-pattern") for p in opts.fatal_patterns]
        self.checkpoint_path = Path(opts.checkpoint_file) if opts.checkpoint_file else self.job.default_checkpoint
        self.heartbeat_path = Path(opts.heartbeat_file) if opts.heartbeat_file else self.job.default_heartbeat
        # run state
        self.run_id = ""
        self.attempt = 0
        self.restarts = 0
        self.status = Status.STARTING
        self.checkpoint: str | None = None
        self.child: _Child | None = None
        self.exit_code: int | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.last_output_at: float | None = None
        self.last_progress_at: float | None = None
        self.next_deadline: tuple[float, str] | None = None
        self._state_dirty = False
        self._state_written_at = 0.0
        self.inotify = None
        self.fatal_line: str | None = None

    # --- messages, events, state -------------------------------------------------------------------
    def say(self, text: str) -> None:
        """An `hbwrap:` line on stderr (held back with --quiet until the run fails)."""
        if self.opts.quiet:
            self.messages.append(text)
        else:
            _message(text)

    def emit(self, event: Event, **fields) -> dict:
        record = {"ts": iso(self.wall()), "job": self.opts.name, "run_id": self.run_id, "attempt": self.attempt,
                  "event": event.value}
        record.update({k: v for k, v in fields.items() if v is not None})
        try:
            self.job.append_event(record)
        except OSError as exc:
            _message(f"cannot append to {self.job.events_file}: {exc.strerror}")
        return record

    def state_doc(self) -> dict:
        child = self.child
        deadline_at = deadline_kind = None
        if self.next_deadline is not None:
            deadline_at = iso(self.wall() + (self.next_deadline[0] - self.clock()))
            deadline_kind = self.next_deadline[1]
        return {
            "schema": SCHEMA_VERSION, "name": self.opts.name, "run_id": self.run_id, "status": self.status.value,
            "attempt": self.attempt, "restarts": self.restarts,
            "supervisor_pid": os.getpid(), "supervisor_start": procs.start_time(os.getpid()),
            "keeper_pid": child.keeper.pid if child else None, "keeper_start": child.keeper_start if child else None,
            "child_pid": child.pid if child else None, "child_start": child.start if child else None,
            "checkpoint": self.checkpoint, "exit_code": self.exit_code,
            "started_at": iso(self.started_at), "ended_at": iso(self.ended_at),
            "last_output_at": iso(self.last_output_at), "last_progress_at": iso(self.last_progress_at),
            "next_deadline_at": deadline_at, "next_deadline": deadline_kind,
            "updated_at": iso(self.wall()), "command": list(self.opts.command), "options": self.opts.to_json(),
        }

    def write_state(self) -> None:
        try:
            write_json_atomic(self.job.state_file, self.state_doc())
        except OSError as exc:
            _message(f"cannot write {self.job.state_file}: {exc.strerror}")
        self._state_dirty = False
        self._state_written_at = self.clock()

    def set_status(self, status: Status) -> None:
        self.status = status
        self.write_state()

    # --- signals -----------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _install_signals(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            if int(sig) not in self.ignored_signals:
                signal.signal(sig, self._on_signal)

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # --- run ---------------------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise a new run of the job; returns hbwrap's exit code."""
        from filelock import FileLock, Timeout

        self.state_dir.ensure()
        self.job.ensure()
        lock = FileLock(str(self.job.lock_file), mode=0o600)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if self.opts.verbose:
                _message(f"job {self.opts.name} is already running; skipping this run")
            return 0
        except OSError as exc:
            raise StateError(f"cannot lock {self.job.lock_file}: {exc.strerror or exc}") from None
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> int:
        self.run_id = new_run_id()
        self.run_started = self.clock()
        self.started_at = self.wall()
        gen, offset = log_position(self.job.log_file, self.job.index_file)
        self.follower = LogFollower(self.job.log_file, self.job.index_file, gen, offset)
        self.scanners = {s: MarkerScanner(self.progress_patterns, self.fatal_patterns) for s in (STDOUT, STDERR)}
        self._install_signals()
        self._setup_watches()
        self.write_state()
        self.emit(Event.RUN_START, command=list(self.opts.command), supervisor_pid=os.getpid())
        try:
            while True:
                self.attempt += 1
                end = self._run_attempt()
                decision = policy.decide(self.opts, end, self.restarts, self.clock(), self.run_started, self.rng)
                if decision.kind is not DecisionKind.RESTART:
                    return self._finish(decision, end)
                self.restarts += 1
                self.emit(Event.RESTART, delay_s=round(decision.delay_s, 3), restarts=self.restarts,
                          reason="stall" if end.stall else "failure", resume_from=self._resume_value())
                resume = f", resuming from {self.checkpoint}" if self._resume_value() else ""
                self.say(f"restarting {self.opts.name} in {_fmt_s(decision.delay_s)} "
                         f"(restart {self.restarts} of {self.opts.max_restarts}){resume}")
                if not self._backoff(decision.delay_s):
                    self.emit(Event.STALL, reason=StallReason.DEADLINE.value, detail="--deadline passed during back-off")
                    return self._finish(policy.Decision(DecisionKind.ESCALATE, 124, "deadline"), end)
        except _Stop as stop:
            return self._finish_stopped(stop.signum)
        finally:
            if self.inotify is not None:
                self.inotify.close()

    def _resume_value(self) -> str | None:
        return self.checkpoint if self.opts.resume and self.checkpoint else None

    def _backoff(self, delay_s: float) -> bool:
        """Wait before a restart; False if the run's --deadline passes first. Raises _Stop on a signal."""
        self.status = Status.BACKOFF
        self.child = None
        restart_at = self.clock() + delay_s
        deadline = policy.run_deadline_at(self.opts, self.run_started)
        self.next_deadline = (restart_at, "restart")
        self.write_state()
        while True:
            now = self.clock()
            if self.signals:
                raise _Stop(self.signals[0])
            if deadline is not None and now >= deadline and deadline <= restart_at:
                return False
            if now >= restart_at:
                return True
            wake_at = min(restart_at, deadline) if deadline is not None else restart_at
            try:
                select.select([self.wake_r], [], [], max(0.0, wake_at - now))
            except InterruptedError:
                pass
            self._drain_wake()

    # --- one attempt -------------------------------------------------------------------------------
    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(HBWRAP_JOB=self.opts.name, HBWRAP_RUN_ID=self.run_id, HBWRAP_ATTEMPT=str(self.attempt),
                   HBWRAP_CHECKPOINT_FILE=str(self.checkpoint_path), HBWRAP_HEARTBEAT_FILE=str(self.heartbeat_path))
        resume = self._resume_value()
        if resume is not None:
            env["HBWRAP_RESUME_FROM"] = resume
        else:
            env.pop("HBWRAP_RESUME_FROM", None)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.opts.pty:
            env["PAGER"] = "cat"
            env.setdefault("TERM", "xterm")
            env["COLUMNS"], env["LINES"] = "500", "50"
        return env

    def _launch(self) -> _Child | AttemptEnd:
        stdin_tty = os.isatty(0)
        spec = {"schema": SCHEMA_VERSION, "run_id": self.run_id, "attempt": self.attempt,
                "command": list(self.opts.command), "cwd": self.opts.cwd, "pty": self.opts.pty,
                "kill_signal": self.opts.kill_signal, "grace_s": self.opts.grace_s,
                "log_max_size": self.opts.log_max_size, "ignored_signals": self.ignored_signals,
                "stdin_inherit": stdin_tty and not self.opts.pty}
        write_json_atomic(self.job.keeper_spec_file, spec, fsync=False)
        try:
            self.job.keeper_file.unlink()
        except FileNotFoundError:
            pass
        hs_r, hs_w = os.pipe()
        err_fd = os.open(self.job.path / "keeper.err", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            keeper = subprocess.Popen([sys.executable, "-m", "hbwrap.keeper", str(self.job.path), str(hs_w)],
                                      stdin=None if spec["stdin_inherit"] else subprocess.DEVNULL,
                                      stdout=err_fd, stderr=err_fd, pass_fds=(hs_w,), start_new_session=True,
                                      env=self._child_env(), cwd=self.opts.cwd)
        except OSError as exc:
            raise HbwrapError(f"cannot start the keeper process: {exc.strerror or exc}") from None
        finally:
            os.close(hs_w)
            os.close(err_fd)
        line = self._read_handshake(hs_r, keeper)
        parts = line.split(" ", 2)
        if parts[0] == "exec":
            keeper.wait()
            code = int(parts[1])
            reason = parts[2].strip() if len(parts) > 2 else ""
            self.say(f"cannot run {self.opts.command[0]!r}: {reason}")
            self.emit(Event.EXIT, exit_code=code, reason="not found" if code == 127 else "not executable",
                      detail=reason)
            return AttemptEnd(exec_error=code)
        if parts[0] != "ok" or len(parts) < 3:
            keeper.kill()
            keeper.wait()
            try:
                tail = (self.job.path / "keeper.err").read_bytes()[-400:].decode(errors="replace").strip()
            except OSError:
                tail = ""
            raise HbwrapError(f"the keeper process failed to start{': ' + tail.splitlines()[-1] if tail else ''}")
        child_start = int(parts[2]) if parts[2].strip().isdigit() else None
        return _Child(keeper, procs.start_time(keeper.pid), int(parts[1]), child_start, procs.pidfd_open(keeper.pid))

    def _read_handshake(self, fd: int, keeper: subprocess.Popen) -> str:
        data = b""
        end = self.clock() + HANDSHAKE_TIMEOUT_S
        try:
            while b"\n" not in data and self.clock() < end:
                ready, _, _ = select.select([fd], [], [], max(0.0, end - self.clock()))
                if not ready:
                    break
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        return data.decode(errors="replace").strip()

    def _setup_watches(self) -> None:
        from hbwrap.inotify import Inotify

        try:
            self.inotify = Inotify()
            dirs = {str(self.job.path), str(self.checkpoint_path.parent), str(self.heartbeat_path.parent)}
            for d in dirs:
                self.inotify.watch_dir(d)
        except OSError as exc:
            if self.inotify is not None:
                self.inotify.close()
            self.inotify = None
            if self.opts.verbose:
                _message(f"inotify unavailable ({exc.strerror or exc}); checking files every {POLL_FALLBACK_S}s")

    def _run_attempt(self) -> AttemptEnd:
        launched = self._launch()
        if isinstance(launched, AttemptEnd):
            return launched
        self.child = child = launched
        attempt = _AttemptWatch(self, child)
        self.emit(Event.ATTEMPT_START, child_pid=child.pid, resume_from=self._resume_value())
        self.status = Status.RUNNING
        self.write_state()
        try:
            return attempt.watch()
        finally:
            attempt.close()

    # --- endings -----------------------------------------------------------------------------------
    def _finish(self, decision, end: AttemptEnd) -> int:
        code = decision.exit_code
        self.exit_code = code
        self.child = None
        self.next_deadline = None
        self.ended_at = self.wall()
        if decision.kind is DecisionKind.SUCCEED:
            self.emit(Event.SUCCESS, exit_code=0, checkpoint=self.checkpoint)
            self.status = Status.SUCCEEDED
        elif decision.kind is DecisionKind.FAIL:
            self.emit(Event.FAILURE, exit_code=code, reason=decision.reason, checkpoint=self.checkpoint)
            self.status = Status.FAILED
            self.say(f"{self.opts.name} failed with exit code {code}")
        else:
            reason = decision.reason
            self.emit(Event.ESCALATE, exit_code=code, reason=reason, stall=end.stall.value if end.stall else None,
                      restarts=self.restarts, checkpoint=self.checkpoint,
                      fatal_line=self.fatal_line if reason == "fatal" else None)
            self.status = Status.ESCALATED
            what = {"deadline": "the run's --deadline passed", "fatal": "a --fatal-pattern matched",
                    "restarts exhausted": f"restarts exhausted ({self.restarts} of {self.opts.max_restarts})",
                    "stall": "it stalled and --restart is never"}.get(reason, reason)
            self.say(f"giving up on {self.opts.name}: {what}; exit code {code}")
        self.write_state()
        if code != 0:
            self._replay_quiet()
        return code

    def _finish_stopped(self, signum: int) -> int:
        self.exit_code = 128 + signum
        self.child = None
        self.next_deadline = None
        self.ended_at = self.wall()
        self.emit(Event.STOP, signal=signal_name(signum), exit_code=self.exit_code)
        self.status = Status.STOPPED
        self.write_state()
        self.say(f"stopped {self.opts.name} on {signal_name(signum)}")
        self._replay_quiet()
        return self.exit_code

    def _replay_quiet(self) -> None:
        if not self.opts.quiet:
            return
        if self.passthrough.dropped:
            _message(f"output of this run truncated to its last {self.passthrough.QUIET_CAP // 1024} KiB; "
                     f"the full log is {self.job.log_file}")
        self.passthrough.replay()
        for text in self.messages:
            _message(text)
        _message(f"full output log: {self.job.log_file}")


class _AttemptWatch:
    """The loop of one attempt: blocks until output, a file change, a probe, the keeper's exit or a deadline."""

    def __init__(self, sup: Supervisor, child: _Child):
        self.sup, self.child = sup, child
        now = sup.clock()
        self.clocks = policy.Clocks(sup.run_started, now, now, now)
        self.stall: StallReason | None = None
        self.stop_started: float | None = None
        self.sigkill_noted = False
        self.forced = False
        self.fatal_line: str | None = None
        self.heartbeat_mtime = _mtime(sup.heartbeat_path)
        self.checkpoint_content, _ = _last_nonempty_line(sup.checkpoint_path)
        self.pending_checkpoint: str | None = None
        self.last_checkpoint_event = -1e9
        self.probe: subprocess.Popen | None = None
        self.probe_started = 0.0
        self.probe_pidfd: int | None = None
        self.probe_failures = 0
        opts = sup.opts
        self.next_probe_at = now + opts.start_grace_s + opts.probe_interval_s if opts.probe else None
        self.more_output = False

    # the loop
    def watch(self) -> AttemptEnd:
        sup, child = self.sup, self.child
        poller = select.poll()
        poller.register(sup.wake_r, select.POLLIN)
        if sup.inotify is not None:
            poller.register(sup.inotify.fd, select.POLLIN)
        if child.pidfd is not None:
            poller.register(child.pidfd, select.POLLIN)
        while True:
            now = sup.clock()
            timeout = self._timeout(now)
            if self.probe_pidfd is not None:
                poller.register(self.probe_pidfd, select.POLLIN)
            try:
                ready = poller.poll(None if timeout is None else max(0, timeout) * 1000)
            except InterruptedError:
                ready = []
            if self.probe_pidfd is not None:
                poller.unregister(self.probe_pidfd)
            fds = {fd for fd, _ in ready}
            now = sup.clock()
            if sup.wake_r in fds:
                sup._drain_wake()
            changed = sup.inotify.read() if sup.inotify is not None and sup.inotify.fd in fds else None
            self._pump(now)
            self._check_files(changed, now)
            self._check_probe(now)
            if sup.signals:
                if self.stop_started is None:
                    self._begin_stop(now, None)
                elif len(sup.signals) > 1 and not self.forced:
                    self._force_kill("a second stop signal")
            if child.keeper.poll() is not None:
                break
            if self.stop_started is None:
                reason = policy.due_stall(sup.opts, self.clocks, now)
                if reason is None and self.probe_failures >= sup.opts.probe_failures and sup.opts.probe:
                    reason = StallReason.PROBE
                if reason is not None:
                    self._begin_stop(now, reason)
            else:
                if not self.sigkill_noted and now >= self.stop_started + sup.opts.grace_s:
                    self.sigkill_noted = True
                    sup.emit(Event.KILL, signal="SIGKILL", pid=child.pid)
                if not self.forced and now >= self.stop_started + sup.opts.grace_s + KILL_FALLBACK_S:
                    self._force_kill("the keeper did not finish the kill in time")
            if self.pending_checkpoint is not None and now >= self.last_checkpoint_event + CHECKPOINT_EVENT_SPACING_S:
                self._checkpoint_event(now)
            if sup._state_dirty and now >= sup._state_written_at + STATE_FLUSH_S or \
                    now >= sup._state_written_at + STATE_RENEW_S:
                sup.next_deadline = self._next_deadline_info()
                sup.write_state()
        return self._ended()

    def _next_deadline_info(self) -> tuple[float, str] | None:
        found = policy.next_deadline(self.sup.opts, self.clocks) if self.stop_started is None else None
        return (found[0], found[1].value) if found else None

    def _timeout(self, now: float) -> float | None:
        sup = self.sup
        if self.more_output:
            return 0
        at = []
        if self.stop_started is None:
            found = policy.next_deadline(sup.opts, self.clocks)
            if found:
                at.append(found[0])
        else:
            at.append(self.stop_started + sup.opts.grace_s)
            at.append(self.stop_started + sup.opts.grace_s + KILL_FALLBACK_S)
        if self.next_probe_at is not None and self.probe is None and self.stop_started is None:
            at.append(self.next_probe_at)
        if self.probe is not None:
            at.append(self.probe_started + sup.opts.probe_timeout_s)
        if self.pending_checkpoint is not None:
            at.append(self.last_checkpoint_event + CHECKPOINT_EVENT_SPACING_S)
        at.append(sup._state_written_at + (STATE_FLUSH_S if sup._state_dirty else STATE_RENEW_S))
        if sup.inotify is None or self.child.pidfd is None:
            at.append(now + POLL_FALLBACK_S)
        future = [a for a in at if a > now - 1e-3]
        timeout = (min(future) - now) if future else None
        if timeout is not None:
            timeout = max(timeout, 0.0) + 0.0005  # wake just after, not just before, the instant
        return timeout

    # observations
    def _pump(self, now: float, budget: int = PUMP_BUDGET) -> None:
        sup = self.sup
        got = 0
        while got < budget:
            pieces = sup.follower.read()
            if not pieces:
                break
            for stream, data in pieces:
                got += len(data)
                sup.passthrough.write(stream, data)
                for kind, value in sup.scanners[stream].feed(data):
                    self._marker(kind, value, now)
        self.more_output = got >= budget
        if got:
            self.clocks.last_life = now
            sup.last_output_at = sup.wall()
            sup._state_dirty = True

    def _marker(self, kind: str, value: str, now: float) -> None:
        sup = self.sup
        if kind == "fatal":
            if self.fatal_line is None:
                self.fatal_line = sup.fatal_line = value
                sup.say(f"fatal pattern matched: {value[:200]!r}; this attempt will not be retried")
            return
        self._progress(value, now)

    def _progress(self, value: str | None, now: float) -> None:
        sup = self.sup
        self.clocks.last_progress = now
        self.clocks.last_life = max(self.clocks.last_life, now)
        sup.last_progress_at = sup.wall()
        sup._state_dirty = True
        if value is not None and value != sup.checkpoint:
            sup.checkpoint = value
            self.pending_checkpoint = value
            if now >= self.last_checkpoint_event + CHECKPOINT_EVENT_SPACING_S:
                self._checkpoint_event(now)

    def _checkpoint_event(self, now: float) -> None:
        self.sup.emit(Event.CHECKPOINT, checkpoint=self.pending_checkpoint)
        self.pending_checkpoint = None
        self.last_checkpoint_event = now

    def _check_files(self, changed: set | None, now: float) -> None:
        sup = self.sup
        hb, cp = sup.heartbeat_path, sup.checkpoint_path
        if changed is None or (str(hb.parent), hb.name) in changed:
            mtime = _mtime(hb)
            if mtime is not None and mtime != self.heartbeat_mtime:
                self.heartbeat_mtime = mtime
                self.clocks.last_life = now
                sup._state_dirty = True
        if changed is None or (str(cp.parent), cp.name) in changed:
            content, line = _last_nonempty_line(cp)
            if content is not None and content != self.checkpoint_content:
                self.checkpoint_content = content
                self._progress(line, now)

    def _check_probe(self, now: float) -> None:
        sup, opts = self.sup, self.sup.opts
        if not opts.probe or self.stop_started is not None:
            return
        if self.probe is not None:
            code = self.probe.poll()
            if code is None and now >= self.probe_started + opts.probe_timeout_s:
                procs.killpg_quietly(self.probe.pid, signal.SIGKILL)
                self.probe.wait()
                code = -1
            if code is None:
                return
            self._close_probe()
            if code == 0:
                self.probe_failures = 0
                self.clocks.last_life = max(self.clocks.last_life, now)
            else:
                self.probe_failures += 1
        if self.probe is None and self.next_probe_at is not None and now >= self.next_probe_at:
            env = sup._child_env()
            env["HBWRAP_CHILD_PID"] = str(self.child.pid)
            try:
                self.probe = subprocess.Popen(["/bin/sh", "-c", opts.probe], stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                              start_new_session=True, env=env, cwd=opts.cwd)
            except OSError:
                self.probe_failures += 1
            else:
                self.probe_started = now
                self.probe_pidfd = procs.pidfd_open(self.probe.pid)
            self.next_probe_at = now + opts.probe_interval_s

    def _close_probe(self) -> None:
        if self.probe_pidfd is not None:
            os.close(self.probe_pidfd)
        self.probe, self.probe_pidfd = None, None

    # actions
    def _stall_detail(self, reason: StallReason, now: float) -> str:
        opts, c = self.sup.opts, self.clocks
        if reason is StallReason.RESPONSE:
            return f"no sign of life for {_fmt_s(now - max(c.last_life, c.attempt_started))} (--response-timeout {_fmt_s(opts.response_timeout_s)})"
        if reason is StallReason.PROGRESS:
            return f"no progress for {_fmt_s(now - max(c.last_progress, c.attempt_started))} (--progress-timeout {_fmt_s(opts.progress_timeout_s)})"
        if reason is StallReason.TIMEOUT:
            return f"attempt ran for {_fmt_s(now - c.attempt_started)} (--timeout {_fmt_s(opts.timeout_s)})"
        if reason is StallReason.DEADLINE:
            return f"run ran for {_fmt_s(now - c.run_started)} (--deadline {_fmt_s(opts.deadline_s)})"
        return f"probe failed {self.probe_failures} times in a row"

    def _begin_stop(self, now: float, reason: StallReason | None) -> None:
        sup, child = self.sup, self.child
        self.stop_started = now
        self.stall = reason
        if self.probe is not None:
            procs.killpg_quietly(self.probe.pid, signal.SIGKILL)
        sig = signal_name(sup.opts.kill_signal)
        if reason is not None:
            detail = self._stall_detail(reason, now)
            sup.emit(Event.STALL, reason=reason.value, detail=detail, checkpoint=sup.checkpoint)
            sup.say(f"{sup.opts.name} stalled ({reason.value}): {detail}; stopping it with {sig}, "
                    f"SIGKILL after {_fmt_s(sup.opts.grace_s)}")
        procs.signal_verified(child.keeper.pid, child.keeper_start, signal.SIGTERM)
        sup.emit(Event.KILL, signal=sig, pid=child.pid, reason=reason.value if reason else "stop")
        sup.next_deadline = None
        sup.write_state()

    def _force_kill(self, why: str) -> None:
        """Kill the attempt's whole tree now, ourselves (the keeper's tree is ours by ancestry)."""
        sup, child = self.sup, self.child
        self.forced = True
        if not self.sigkill_noted:
            self.sigkill_noted = True
            sup.emit(Event.KILL, signal="SIGKILL", pid=child.pid, reason=why)
        if procs.is_same_process(child.keeper.pid, child.keeper_start):
            for pid in procs.descendants(child.keeper.pid):
                procs.kill_quietly(pid, signal.SIGKILL)
        if procs.is_same_process(child.pid, child.start):
            procs.killpg_quietly(child.pid, signal.SIGKILL)
        if why.startswith("the keeper"):
            procs.signal_verified(child.keeper.pid, child.keeper_start, signal.SIGKILL)

    def _ended(self) -> AttemptEnd:
        sup, child = self.sup, self.child
        child.keeper.wait()
        self.more_output = False
        self._pump(sup.clock(), budget=1 << 62)
        for stream, scanner in sup.scanners.items():
            for kind, value in scanner.flush():
                self._marker(kind, value, sup.clock())
        self._check_files(None, sup.clock())
        if self.pending_checkpoint is not None:
            self._checkpoint_event(sup.clock())
        try:
            record = sup.job.read_keeper() or {}
        except StateError:
            record = {}
        if record.get("child_pid") != child.pid:
            record = {}
        code, sig = record.get("exit_code"), record.get("exit_signal")
        lost = code is None and sig is None
        if lost:
            # the keeper vanished without recording an exit: never leave the group behind
            if procs.is_same_process(child.pid, child.start):
                procs.killpg_quietly(child.pid, signal.SIGKILL)
                sup.emit(Event.KILL, signal="SIGKILL", pid=child.pid, reason="keeper lost")
            sup.emit(Event.EXIT, reason="unknown", detail="the keeper process died; exit status unknown")
        elif sig is not None:
            sup.emit(Event.EXIT, signal=signal_name(sig), exit_code=128 + sig)
        else:
            sup.emit(Event.EXIT, exit_code=code)
        if sup.signals:
            raise _Stop(sup.signals[0])
        if self.stall is not None:
            return AttemptEnd(exit_code=code, signal=sig, stall=self.stall, fatal=self.fatal_line is not None)
        return AttemptEnd(exit_code=code, signal=sig, fatal=self.fatal_line is not None, lost=lost)

    def close(self) -> None:
        if self.probe is not None:
            procs.killpg_quietly(self.probe.pid, signal.SIGKILL)
            self.probe.wait()
            self._close_probe()
        if self.child.pidfd is not None:
            os.close(self.child.pidfd)
            self.child.pidfd = None
