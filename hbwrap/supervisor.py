"""The supervisor: one loop that turns observations (output, files, probes, exits, signals) into actions."""
from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from hbwrap import policy, procs
from hbwrap.errors import HbwrapError, StateError
from hbwrap.jobstore import JobDir, StateDir, iso, new_run_id, parse_iso, write_json_atomic
from hbwrap.model import ACTIVE_STATUSES, SCHEMA_VERSION, AttemptEnd, DecisionKind, Event, Status, StallReason
from hbwrap.options import RunOptions, compile_pattern, signal_name
from hbwrap.markers import MarkerScanner
from hbwrap.output import STDERR, STDOUT, LogFollower, Passthrough, StatusLine, log_position

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
HANDSHAKE_TIMEOUT_S = 30.0
STATE_FLUSH_S = 1.0           # liveness fields reach state.json at most this late
STATE_RENEW_S = 10.0          # an idle supervisor still rewrites its record this often
CHECKPOINT_EVENT_SPACING_S = 0.05  # at most 20 checkpoint events a second; the latest value is never lost
KILL_FALLBACK_S = 5.0         # beyond --grace: if the keeper has not finished the kill, do it ourselves
PUMP_BUDGET = 8 * 1024 * 1024  # bytes of output handled before deadlines are looked at again
POLL_FALLBACK_S = 0.1         # only when inotify is unavailable
ALERT_CLOSE_WAIT_S = 10.0
STATUS_LINE_EVERY_S = 1.0     # live status line refresh, only when stderr is a terminal


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


class SteppedDown(HbwrapError):
    """A newer supervisor took the job over while this one was hung: leave everything to it."""

    exit_code = 75


@dataclass
class _Child:
    """The running attempt: its keeper (ours, or adopted) and the command it holds."""

    keeper_pid: int
    keeper_start: int | None
    pid: int
    start: int | None
    pidfd: int | None = None
    popen: subprocess.Popen | None = None

    def keeper_gone(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is not None
        return not procs.is_same_process(self.keeper_pid, self.keeper_start)

    def keeper_verified(self, job_path: Path) -> bool:
        return procs.is_keeper(self.keeper_pid, self.keeper_start, str(job_path))

    def reap(self) -> None:
        if self.popen is not None:
            self.popen.wait()


@dataclass
class _Step:
    """Where the run goes next: launch an attempt, watch a running one, judge an ended one, or wait."""

    kind: str  # "launch" | "watch" | "ended" | "backoff"
    child: _Child | None = None
    end: AttemptEnd | None = None
    restart_at: float | None = None
    clocks: policy.Clocks | None = None
    stop_reason: StallReason | None = None
    stop_started: float | None = None
    stopping: bool = False
    baseline: tuple | None = None  # (heartbeat mtime, checkpoint content) from before the command started


def _message(text: str) -> None:
    try:
        os.write(2, f"hbwrap: {text}\n".encode(errors="replace"))
    except OSError:
        pass


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


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


def _keeper_processes(job_path: Path) -> list[int]:
    """Pids of keeper processes of this job dir that are alive now (found by their command line)."""
    return procs.find_by_argv(b"hbwrap.keeper", os.fsencode(str(job_path)))


class Supervisor:
    """Runs one job to its end: attempts, deadlines, kills, restarts, events and state."""

    def __init__(self, opts: RunOptions, *, clock=time.monotonic, wall=time.time, rng: random.Random | None = None,
                 stdout_fd: int = 1, stderr_fd: int = 2):
        self.clock, self.wall = clock, wall
        self.rng = rng or random.Random()
        self.state_dir = StateDir(opts.state_dir)
        self.job: JobDir = self.state_dir.job(opts.name)
        self.stdout_fd, self.stderr_fd = stdout_fd, stderr_fd
        self.messages: list[str] = []
        self.signals: list[int] = []
        self.stopped_by: str | None = None  # who sent the stop, when not a signal from outside (`hbwrap stop`)
        self.ignored_signals = [int(s) for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                                                 signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
                                if signal.getsignal(s) == signal.SIG_IGN]
        self._use_options(opts)
        # run state
        self.run_id = ""
        self.generation = 0
        self.attempt = 0
        self.restarts = 0
        self.status = Status.STARTING
        self.checkpoint: str | None = None
        self.child: _Child | None = None
        self.exit_code: int | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.attempt_started_at: float | None = None
        self.last_life_at: float | None = None
        self.last_output_at: float | None = None
        self.last_progress_at: float | None = None
        self.next_deadline: tuple[float, str] | None = None
        self.restart_at: float | None = None
        self.stop_info: tuple[str, float] | None = None  # (reason, wall time) while an attempt is being stopped
        self.exit_recorded: int | None = None
        self.fatal_line: str | None = None
        self._state_dirty = False
        self._state_written_at = -1e9
        self.inotify = None
        self.wake_r = self.wake_w = -1
        self.alerter = None
        self._cursor_fd: int | None = None
        self.run_log_start: tuple[int, int] | None = None
        self._own_children: set[int] = set()  # probes: reaped by their Popen, never by reap_strays

    def _use_options(self, opts: RunOptions) -> None:
        self.opts = opts
        self.status_line = StatusLine(self.stderr_fd) if not opts.quiet and os.isatty(self.stderr_fd) else None
        self.passthrough = Passthrough(opts.quiet, self.stdout_fd, self.stderr_fd, self.status_line)
        self.progress_patterns = [compile_pattern(p, "--progress-pattern") for p in opts.progress_patterns]
        self.fatal_patterns = [compile_pattern(p, "--fatal-pattern") for p in opts.fatal_patterns]
        self.checkpoint_path = Path(opts.checkpoint_file) if opts.checkpoint_file else self.job.default_checkpoint
        self.heartbeat_path = Path(opts.heartbeat_file) if opts.heartbeat_file else self.job.default_heartbeat
        self.renew_s = max(0.05, min(STATE_RENEW_S, opts.lease_s / 3))

    # --- messages, events, state -------------------------------------------------------------------
    def say(self, text: str) -> None:
        """An `hbwrap:` line on stderr (held back with --quiet until the run fails)."""
        if self.opts.quiet:
            self.messages.append(text)
        else:
            if self.status_line is not None:
                self.status_line.hide()
            _message(text)

    def emit(self, event: Event, **fields) -> dict:
        record = {"ts": iso(self.wall()), "job": self.opts.name, "run_id": self.run_id, "attempt": self.attempt,
                  "event": event.value}
        record.update({k: v for k, v in fields.items() if v is not None})
        try:
            self.job.append_event(record)
        except OSError as exc:
            _message(f"cannot append to {self.job.events_file}: {exc.strerror}")
        if self.alerter is not None and event not in (Event.ALERT_FAILED, Event.ALERT_OUTPUT):
            self.alerter.notify(record)
        return record

    def _start_alerter(self) -> None:
        opts = self.opts
        if not (opts.alert_cmd or opts.alert_webhooks or opts.ping_url):
            return
        from hbwrap.alerts import Alerter

        self.alerter = Alerter(job=opts.name, alert_cmd=opts.alert_cmd, webhooks=list(opts.alert_webhooks),
                               webhook_format=opts.webhook_format,
                               alert_on=frozenset(opts.alert_on) if opts.alert_on is not None else None,
                               ping_url=opts.ping_url, record=lambda fields: self.emit(Event.ALERT_FAILED, **fields),
                               delivered=self._alert_delivered, output_tail=self._output_tail)

    def _alert_delivered(self, fields: dict) -> None:
        """A delivery went through: keep what a successful alert command printed (bounded, masked) in the events."""
        if fields.get("channel") == "alert-cmd" and fields.get("output"):
            self.emit(Event.ALERT_OUTPUT, channel=fields["channel"], alert_event=fields.get("alert_event"),
                      output=fields["output"])

    def _output_tail(self, n: int) -> bytes:
        """The last `n` bytes of this run's output (never the previous run's)."""
        try:
            with open(self.job.log_file, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                start = max(0, size - n)
                if self.run_log_start is not None and self.run_log_start[0] == self.follower.generation:
                    start = max(start, self.run_log_start[1])
                f.seek(start)
                return f.read(max(0, size - start))
        except OSError:
            return b""

    def state_doc(self) -> dict:
        child = self.child
        deadline_at = deadline_kind = None
        if self.next_deadline is not None:
            deadline_at = iso(self.wall() + (self.next_deadline[0] - self.clock()))
            deadline_kind = self.next_deadline[1]
        return {
            "schema": SCHEMA_VERSION, "name": self.opts.name, "run_id": self.run_id, "status": self.status.value,
            "generation": self.generation, "attempt": self.attempt, "restarts": self.restarts,
            "supervisor_pid": os.getpid(), "supervisor_start": procs.start_time(os.getpid()),
            "lease_renewed_at": self.wall(), "lease_s": self.opts.lease_s,
            "keeper_pid": child.keeper_pid if child else None, "keeper_start": child.keeper_start if child else None,
            "child_pid": child.pid if child else None, "child_start": child.start if child else None,
            "checkpoint": self.checkpoint, "exit_code": self.exit_code, "fatal_line": self.fatal_line,
            "started_at": iso(self.started_at), "ended_at": iso(self.ended_at),
            "attempt_started_at": iso(self.attempt_started_at), "last_life_at": iso(self.last_life_at),
            "last_output_at": iso(self.last_output_at), "last_progress_at": iso(self.last_progress_at),
            "next_deadline_at": deadline_at, "next_deadline": deadline_kind,
            "restart_at": iso(self.restart_at),
            "stop_reason": self.stop_info[0] if self.stop_info else None,
            "stop_started_at": iso(self.stop_info[1]) if self.stop_info else None,
            "exit_recorded": self.exit_recorded,
            "updated_at": iso(self.wall()), "command": list(self.opts.command), "options": self.opts.to_json(),
        }

    def check_fence(self) -> None:
        """Step down if a newer supervisor has taken the job over (fencing by generation number)."""
        try:
            on_disk = self.job.read_state()
        except StateError:
            return
        if on_disk and on_disk.get("run_id") == self.run_id and int(on_disk.get("generation") or 0) > self.generation:
            raise SteppedDown(f"job {self.opts.name} was taken over by supervisor pid "
                              f"{on_disk.get('supervisor_pid')}; stepping down without touching the command")

    def write_state(self) -> None:
        self.check_fence()
        try:
            write_json_atomic(self.job.state_file, self.state_doc())
        except OSError as exc:
            _message(f"cannot write {self.job.state_file}: {exc.strerror}")
        self._state_dirty = False
        self._state_written_at = self.clock()

    def save_cursor(self) -> None:
        """Where passthrough has read the log up to, so a takeover neither repeats nor skips output.

        One pwrite of a fixed-width line into a descriptor kept open for the run (this is on the output
        path); the keeper reads the held generation from it before rotating the log.
        """
        gen, offset = self.follower.position
        try:
            if self._cursor_fd is None:
                self._cursor_fd = os.open(self.job.cursor_file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.pwrite(self._cursor_fd, b"%s %020d %020d %020d\n" % (self.run_id.encode(), gen, offset,
                                                                    self.follower.held_generation), 0)
        except OSError:
            pass

    def read_cursor(self) -> tuple[int, int] | None:
        try:
            parts = self.job.cursor_file.read_bytes().split()
            if len(parts) >= 3 and parts[0].decode() == self.run_id:
                return int(parts[1]), int(parts[2])
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        return None

    # --- signals -----------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _install_signals(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            if int(sig) not in self.ignored_signals:
                signal.signal(sig, self._on_signal)
        if os.getpid() == 1:  # a container's init: orphans of the whole namespace come to us
            signal.signal(signal.SIGCHLD, lambda *_: None)

    def reap_strays(self) -> None:
        """As PID 1, reap exited processes we inherited (never our own keeper or probe: their status matters)."""
        if os.getpid() != 1:
            return
        ours = {self.child.keeper_pid} if self.child else set()
        ours |= self._own_children
        if self.alerter is not None:
            ours |= self.alerter.own_pids
        for pid in procs.zombie_children(1):
            if pid not in ours:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        self.reap_strays()

    # --- exclusion: the job lock and the lease ----------------------------------------------------
    def _holder(self) -> dict | None:
        try:
            return self.job.read_state()
        except StateError:
            return None

    def _kill_hung_holder(self) -> bool:
        """Kill the lock holder if its lease has expired (identity verified); True if one was killed."""
        holder = self._holder()
        if not holder:
            return False
        renewed = holder.get("lease_renewed_at")
        lease_s = holder.get("lease_s") or self.opts.lease_s
        if not isinstance(renewed, (int, float)) or self.wall() - renewed <= lease_s:
            return False
        pid, start = holder.get("supervisor_pid"), holder.get("supervisor_start")
        if pid == os.getpid() or not procs.is_supervisor(pid, start) or not procs.kill_quietly(pid, signal.SIGKILL):
            return False
        _message(f"supervisor pid {pid} of job {self.opts.name} is hung (lease {_fmt_s(lease_s)} expired "
                 f"{_fmt_s(self.wall() - renewed - lease_s)} ago); killed it to take over")
        end = time.monotonic() + 5.0
        while procs.is_same_process(pid, start) and time.monotonic() < end:
            time.sleep(0.01)
        self.killed_hung = pid
        return True

    def acquire(self, if_running: str, takeover_only: bool):
        """The job lock, or the exit code to return when the job is busy (SPEC §3 --if-running, §4 watch)."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.job.lock_file), mode=0o600)
        waited = False
        while True:
            try:
                lock.acquire(timeout=0)
                return lock
            except Timeout:
                pass
            except OSError as exc:
                raise StateError(f"cannot lock {self.job.lock_file}: {exc.strerror or exc}") from None
            if self._kill_hung_holder():
                continue
            holder = self._holder() or {}
            who = f" (supervisor pid {holder['supervisor_pid']})" if holder.get("supervisor_pid") else ""
            if takeover_only:
                _message(f"job {self.opts.name} has a live supervisor{who}; nothing to take over")
                return 75
            if if_running == "skip":
                if self.opts.verbose:
                    _message(f"job {self.opts.name} is already running{who}; skipping this run")
                return 0
            if if_running == "fail":
                _message(f"job {self.opts.name} is already running{who}")
                return 75
            if not waited and self.opts.verbose:
                _message(f"job {self.opts.name} is already running{who}; waiting for it to finish")
            waited = True
            try:
                lock.acquire(timeout=max(0.1, min(1.0, self.opts.lease_s / 3)), poll_interval=0.05)
                return lock
            except Timeout:
                continue

    # --- run ---------------------------------------------------------------------------------------
    def run(self, if_running: str = "skip", takeover_only: bool = False) -> int:
        """Supervise the job: take over its orphaned run if it has one, else start a new run.

        Returns hbwrap's exit code. With `takeover_only` (hbwrap watch), exit 1 if there is nothing to adopt.
        """
        self.state_dir.ensure()
        self.job.ensure()
        self.killed_hung = None
        lock = self.acquire(if_running, takeover_only)
        if isinstance(lock, int):
            return lock
        try:
            state = self._orphan_state()
            if state is None and takeover_only:
                _message(f"job {self.opts.name} has no orphaned run to take over")
                return 1
            return self._run_locked(state)
        except SteppedDown as exc:
            _message(str(exc))
            return exc.exit_code
        finally:
            lock.release()
            if self.inotify is not None:
                self.inotify.close()
            if self._cursor_fd is not None:
                os.close(self._cursor_fd)
            if self.alerter is not None:
                self.alerter.close(ALERT_CLOSE_WAIT_S)  # SPEC §9: up to 10 s for alerts still in flight

    def _orphan_state(self) -> dict | None:
        """The recorded state if it describes a run whose supervisor is gone (we hold the lock), else None."""
        try:
            state = self.job.read_state()
        except StateError as exc:
            try:
                keeper = self.job.read_keeper()
            except StateError:
                keeper = None
            if keeper and procs.is_keeper(keeper.get("keeper_pid"), keeper.get("keeper_start"), str(self.job.path)):
                raise StateError(f"{exc}; its command may still be running (keeper pid {keeper['keeper_pid']}), "
                                 f"so hbwrap will not start another: stop it, then remove {self.job.state_file}") from None
            aside = self.job.state_file.with_name(f"state.json.corrupt-{int(self.wall())}")
            try:
                os.replace(self.job.state_file, aside)
            except OSError:
                raise exc from None
            _message(f"{exc}; moved it to {aside.name} and starting a new run")
            return None
        if state and state.get("status") in {s.value for s in ACTIVE_STATUSES} and state.get("run_id"):
            return state
        return None

    def _run_locked(self, orphan: dict | None) -> int:
        self._install_signals()
        if orphan is not None:
            step = self._adopt(orphan)
        else:
            step = self._start_run()
        self._setup_watches()
        while True:
            try:
                if step.kind == "backoff":
                    if not self._backoff(step.restart_at):
                        self.emit(Event.STALL, reason=StallReason.DEADLINE.value,
                                  detail="--deadline passed during back-off")
                        return self._finish(policy.Decision(DecisionKind.ESCALATE, 124, "deadline"), AttemptEnd())
                    step = _Step("launch")
                    continue
                if step.kind in ("launch", "relaunch") and self.signals:
                    raise _Stop(self.signals[0])  # stopped before any command ran
                if step.kind == "launch":
                    self.attempt += 1
                    end = self._run_attempt()
                elif step.kind == "relaunch":
                    end = self._run_attempt()
                elif step.kind == "watch":
                    end = self._watch(step)
                else:
                    end = step.end
                    self._record_exit(end)
                if self.signals:
                    raise _Stop(self.signals[0])
            except _Stop as stop:
                return self._finish_stopped(stop.signum)
            decision = policy.decide(self.opts, end, self.restarts, self.clock(), self.run_started, self.rng)
            if decision.kind is not DecisionKind.RESTART:
                return self._finish(decision, end)
            self.restarts += 1
            self.emit(Event.RESTART, delay_s=round(decision.delay_s, 3), restarts=self.restarts,
                      reason="stall" if end.stall else "failure", resume_from=self._resume_value())
            resume = f", resuming from {self.checkpoint}" if self._resume_value() else ""
            self.say(f"restarting {self.opts.name} in {_fmt_s(decision.delay_s)} "
                     f"(restart {self.restarts} of {self.opts.max_restarts}){resume}")
            step = _Step("backoff", restart_at=self.clock() + decision.delay_s)

    def _start_run(self) -> _Step:
        try:
            previous = self.job.read_state()
        except StateError:
            previous = None
        self.generation = int((previous or {}).get("generation") or 0) + 1
        self.run_id = new_run_id()
        self.run_started = self.clock()
        self.started_at = self.wall()
        gen, offset = log_position(self.job.log_file, self.job.index_file)
        self.run_log_start = (gen, offset)
        self._follow_from(gen, offset)
        self.write_state()
        self._start_alerter()
        self.emit(Event.RUN_START, command=list(self.opts.command), supervisor_pid=os.getpid())
        return _Step("launch")

    def _follow_from(self, gen: int, offset: int) -> None:
        self.follower = LogFollower(self.job.log_file, self.job.index_file, gen, offset)
        self.scanners = {s: MarkerScanner(self.progress_patterns, self.fatal_patterns) for s in (STDOUT, STDERR)}
        self.save_cursor()

    def _mono(self, iso_text: str | None, default: float | None = None) -> float | None:
        """A recorded wall-clock instant mapped onto our monotonic clock."""
        ts = parse_iso(iso_text)
        if ts is None:
            return default
        return self.clock() - (self.wall() - ts)

    def _adopt(self, state: dict) -> _Step:
        """Take over the orphaned run recorded in `state`: same run id, attempt, options and deadlines."""
        try:
            opts = RunOptions.from_json(state["options"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{self.job.state_file} has no usable options ({exc}); cannot take over") from None
        self._use_options(replace(opts, quiet=opts.quiet or self.opts.quiet, verbose=opts.verbose or self.opts.verbose,
                                  state_dir=self.opts.state_dir))
        now = self.clock()
        self.run_id = state["run_id"]
        self.generation = int(state.get("generation") or 0) + 1
        self.attempt = int(state.get("attempt") or 0)
        self.restarts = int(state.get("restarts") or 0)
        self.checkpoint = state.get("checkpoint")
        self.fatal_line = state.get("fatal_line")
        self.exit_recorded = state.get("exit_recorded")
        self.started_at = parse_iso(state.get("started_at")) or self.wall()
        self.run_started = self._mono(state.get("started_at"), now)
        self.attempt_started_at = parse_iso(state.get("attempt_started_at"))
        self.last_output_at = parse_iso(state.get("last_output_at"))
        self.last_progress_at = parse_iso(state.get("last_progress_at"))
        self.last_life_at = parse_iso(state.get("last_life_at"))
        cursor = self.read_cursor() or log_position(self.job.log_file, self.job.index_file)
        self._follow_from(*cursor)
        previous = state.get("supervisor_pid")
        self.write_state()  # claims the job: a hung predecessor that wakes up now sees a newer generation
        self._start_alerter()
        if self.alerter is not None:
            self.alerter.replay([e for e in self.job.read_events() if e.get("run_id") == self.run_id])

        step = self._adopted_step(state, now)
        what = {"watch": "the command is still running", "ended": "the command ended while unwatched",
                "backoff": "the run was waiting to restart", "launch": "the run was about to start an attempt",
                "relaunch": "the run was starting an attempt"}[step.kind]
        self.emit(Event.TAKEOVER, previous_supervisor_pid=previous, supervisor_pid=os.getpid(),
                  killed_hung_supervisor=self.killed_hung, detail=what,
                  child_pid=step.child.pid if step.child else None)
        self.say(f"took over job {self.opts.name} (run {self.run_id}, attempt {self.attempt}): {what}")
        return step

    def _adopted_step(self, state: dict, now: float) -> _Step:
        status = state.get("status")
        if status == Status.BACKOFF.value:
            return _Step("backoff", restart_at=self._mono(state.get("restart_at"), now))
        keeper = self._keeper_record_for_attempt()
        if keeper is None:
            # the launch was interrupted; a keeper may still be starting: never start a second one
            end = time.monotonic() + 2.0
            while keeper is None and _keeper_processes(self.job.path) and time.monotonic() < end:
                time.sleep(0.02)
                keeper = self._keeper_record_for_attempt()
            if keeper is None:
                if _keeper_processes(self.job.path):
                    raise StateError(f"a keeper of job {self.opts.name} is running but has no record; not starting "
                                     f"another copy of the command")
                return _Step("relaunch" if self.attempt else "launch")
        stop_reason = state.get("stop_reason")
        stall = StallReason(stop_reason) if stop_reason in {r.value for r in StallReason} else None
        child = _Child(keeper["keeper_pid"], keeper.get("keeper_start"), keeper.get("child_pid"),
                       keeper.get("child_start"))
        if child.keeper_verified(self.job.path) and not keeper.get("ended_at"):
            child.pidfd = procs.pidfd_open(child.keeper_pid)
            attempt_start = self._mono(state.get("attempt_started_at"), now)
            life = max(x for x in (self._mono(state.get("last_life_at")), self._mono(state.get("last_output_at")),
                                   attempt_start) if x is not None)
            progress = max(x for x in (self._mono(state.get("last_progress_at")), attempt_start) if x is not None)
            clocks = policy.Clocks(self.run_started, attempt_start, life, progress)
            stop_started = self._mono(state.get("stop_started_at")) if stop_reason else None
            return _Step("watch", child=child, clocks=clocks, stop_reason=stall, stop_started=stop_started,
                         stopping=bool(stop_reason))
        return _Step("ended", child=child, end=self._end_from_record(keeper, child, stall))

    def _keeper_record_for_attempt(self) -> dict | None:
        try:
            keeper = self.job.read_keeper()
        except StateError:
            return None
        if keeper and keeper.get("run_id") == self.run_id and keeper.get("attempt") == self.attempt:
            return keeper
        return None

    def _end_from_record(self, keeper: dict, child: _Child, stall: StallReason | None) -> AttemptEnd:
        if keeper.get("exec_error") is not None:
            return AttemptEnd(exec_error=int(keeper["exec_error"]))
        code, sig = keeper.get("exit_code"), keeper.get("exit_signal")
        fatal = self.fatal_line is not None
        if code is None and sig is None:
            if child.pid and procs.is_command(child.pid, child.start, self.run_id):
                # the keeper died and the command lives on: it can no longer be watched, so stop it safely
                self._stop_unkept(child)
            return AttemptEnd(lost=True, stall=stall, fatal=fatal)
        return AttemptEnd(exit_code=code, signal=sig, stall=stall, fatal=fatal)

    def _attempt_environ(self) -> dict[str, str]:
        return {"HBWRAP_RUN_ID": self.run_id, "HBWRAP_ATTEMPT": str(self.attempt),
                "HBWRAP_HEARTBEAT_FILE": str(self.heartbeat_path)}

    def _kill_attempt_processes(self, why: str) -> bool:
        """SIGKILL every process of this attempt found by its environment (keeper gone); True if any."""
        exclude = {os.getpid()} | self._own_children | (self.alerter.own_pids if self.alerter else set())
        pids = procs.find_by_environ(self._attempt_environ(), exclude)
        for pid in pids:
            procs.kill_quietly(pid, signal.SIGKILL)
        if pids:
            self.emit(Event.KILL, signal="SIGKILL", pid=min(pids), reason=why)
        return bool(pids)

    def _stop_unkept(self, child: _Child) -> None:
        """Stop a command group whose keeper is gone: kill signal, grace, SIGKILL.

        The group is signalled only after its leader's identity is verified; while any member is left the
        kernel cannot hand the group id to another process, so the later SIGKILL reaches the same group.
        """
        if not procs.is_command(child.pid, child.start, self.run_id):
            return
        sig = self.opts.kill_signal
        procs.killpg_quietly(child.pid, sig)
        self.emit(Event.KILL, signal=signal_name(sig), pid=child.pid, reason="keeper lost")
        end = self.clock() + self.opts.grace_s
        while self.clock() < end and procs.group_members(child.pid):
            time.sleep(0.02)
        if procs.group_members(child.pid):
            procs.killpg_quietly(child.pid, signal.SIGKILL)
            self.emit(Event.KILL, signal="SIGKILL", pid=child.pid, reason="keeper lost")
        self._kill_attempt_processes("keeper lost: escaped processes")  # what left the group (setsid)

    def _record_exit(self, end: AttemptEnd) -> None:
        """The `exit` event of an attempt that ended while nobody watched (unless its supervisor wrote it)."""
        if self.exit_recorded == self.attempt:
            return
        if end.exec_error is not None:
            self.emit(Event.EXIT, exit_code=end.exec_error,
                      reason="not found" if end.exec_error == 127 else "not executable")
        elif end.lost:
            self.emit(Event.EXIT, reason="unknown", detail="the keeper process died; exit status unknown")
        elif end.signal is not None:
            self.emit(Event.EXIT, signal=signal_name(end.signal))
        else:
            self.emit(Event.EXIT, exit_code=end.exit_code)
        self.exit_recorded = self.attempt
        self._drain_output()
        self.write_state()

    def _drain_output(self) -> None:
        while True:
            pieces = self.follower.read()
            if not pieces:
                break
            for stream, data in pieces:
                self.passthrough.write(stream, data)
        self.save_cursor()

    def _resume_value(self) -> str | None:
        return self.checkpoint if self.opts.resume and self.checkpoint else None

    def _backoff(self, restart_at: float) -> bool:
        """Wait before a restart; False if the run's --deadline passes first. Raises _Stop on a signal."""
        self.status = Status.BACKOFF
        self.child = None
        self.stop_info = None
        deadline = policy.run_deadline_at(self.opts, self.run_started)
        self.next_deadline = (restart_at, "restart")
        self.restart_at = self.wall() + (restart_at - self.clock())
        self.write_state()
        while True:
            now = self.clock()
            if self.signals:
                raise _Stop(self.signals[0])
            if deadline is not None and now >= deadline and deadline <= restart_at:
                return False
            if now >= restart_at:
                self.restart_at = None
                return True
            wake_at = min(restart_at, deadline) if deadline is not None else restart_at
            wake_at = min(wake_at, self._state_written_at + self.renew_s)
            try:
                select.select([self.wake_r], [], [], max(0.0, wake_at - now))
            except InterruptedError:
                pass
            self._drain_wake()
            if self.clock() >= self._state_written_at + self.renew_s:
                self.write_state()

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
                "stdin_inherit": stdin_tty}
        write_json_atomic(self.job.keeper_spec_file, spec, fsync=False)
        try:
            self.job.keeper_file.unlink()
        except FileNotFoundError:
            pass
        self.status = Status.STARTING
        self.attempt_started_at = self.wall()
        self.stop_info = None
        self.fatal_line = None
        self.write_state()  # records the attempt number before its keeper exists (see _adopted_step)
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
        line = self._read_handshake(hs_r)
        parts = line.split(" ", 2)
        if parts[0] == "exec":
            keeper.wait()
            code = int(parts[1])
            reason = parts[2].strip() if len(parts) > 2 else ""
            self.say(f"cannot run {self.opts.command[0]!r}: {reason}")
            self.emit(Event.EXIT, exit_code=code, reason="not found" if code == 127 else "not executable",
                      detail=reason)
            self.exit_recorded = self.attempt
            return AttemptEnd(exec_error=code)
        if parts[0] != "ok" or len(parts) < 3:
            keeper.kill()
            keeper.wait()
            if procs.find_by_environ(self._attempt_environ(), {os.getpid()}):
                self.emit(Event.ATTEMPT_START, resume_from=self._resume_value(), detail="keeper lost while starting")
            if self._kill_attempt_processes("keeper lost before it reported"):
                # the keeper started the command, then died before it could say so
                self.say("the keeper process died while starting the command; stopped what it had started")
                self._record_exit(AttemptEnd(lost=True))
                return AttemptEnd(lost=True)
            try:
                tail = (self.job.path / "keeper.err").read_bytes()[-400:].decode(errors="replace").strip()
            except OSError:
                tail = ""
            raise HbwrapError(f"the keeper process failed to start{': ' + tail.splitlines()[-1] if tail else ''}")
        child_start = int(parts[2]) if parts[2].strip().isdigit() else None
        return _Child(keeper.pid, procs.start_time(keeper.pid), int(parts[1]), child_start,
                      procs.pidfd_open(keeper.pid), keeper)

    def _read_handshake(self, fd: int) -> str:
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
        baseline = (_mtime(self.heartbeat_path), _last_nonempty_line(self.checkpoint_path)[0])
        launched = self._launch()
        if isinstance(launched, AttemptEnd):
            return launched
        self.child = launched
        self.emit(Event.ATTEMPT_START, child_pid=launched.pid, resume_from=self._resume_value())
        now = self.clock()
        return self._watch(_Step("watch", child=launched, clocks=policy.Clocks(self.run_started, now, now, now),
                                 baseline=baseline))

    def _watch(self, step: _Step) -> AttemptEnd:
        self.child = step.child
        self.status = Status.RUNNING
        attempt = _AttemptWatch(self, step.child, step.clocks, step.baseline)
        if step.stopping:
            attempt.resume_stop(step.stop_reason, step.stop_started)
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
        self.stop_info = None
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
        self.stop_info = None
        self.ended_at = self.wall()
        self.emit(Event.STOP, signal=signal_name(signum), exit_code=self.exit_code, by=self.stopped_by)
        self.status = Status.STOPPED
        self.write_state()
        how = f"({self.stopped_by})" if self.stopped_by else f"on {signal_name(signum)}"
        self.say(f"stopped {self.opts.name} {how}")
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

    def __init__(self, sup: Supervisor, child: _Child, clocks: policy.Clocks, baseline: tuple | None = None):
        self.sup, self.child = sup, child
        now = sup.clock()
        self.clocks = clocks
        self.stall: StallReason | None = None
        self.stop_started: float | None = None
        self.sigkill_noted = False
        self.forced = False
        self.fatal_line: str | None = None
        if baseline is None:  # adopted: what the files hold now is what the previous supervisor had seen
            baseline = (_mtime(sup.heartbeat_path), _last_nonempty_line(sup.checkpoint_path)[0])
        self.heartbeat_mtime, self.checkpoint_content = baseline
        self.pending_checkpoint: str | None = None
        self.last_checkpoint_event = -1e9
        self.probe: subprocess.Popen | None = None
        self.probe_started = 0.0
        self.probe_pidfd: int | None = None
        self.probe_failures = 0
        opts = sup.opts
        self.next_probe_at = now + opts.start_grace_s + opts.probe_interval_s if opts.probe else None
        self.more_output = False
        self.skipped_noted = sup.follower.skipped_generations
        self.next_status_at = now

    def resume_stop(self, reason: StallReason | None, started: float | None) -> None:
        """Adopted while the previous supervisor was stopping the attempt: the keeper carries the kill on."""
        self.stop_started = started if started is not None else self.sup.clock()
        self.stall = reason
        self.sup.stop_info = (reason.value if reason else "stop",
                              self.sup.wall() - (self.sup.clock() - self.stop_started))

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
            if child.keeper_gone():
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
            if sup.status_line is not None and (now >= self.next_status_at or self.clocks.last_life == now):
                sup.status_line.draw(self._status_text(now), now)
                if now >= self.next_status_at:
                    self.next_status_at = now + STATUS_LINE_EVERY_S
            if sup._state_dirty and now >= sup._state_written_at + STATE_FLUSH_S or \
                    now >= sup._state_written_at + sup.renew_s:
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
        if sup.status_line is not None:
            at.append(self.next_status_at)
        at.append(sup._state_written_at + (STATE_FLUSH_S if sup._state_dirty else sup.renew_s))
        if sup.inotify is None or self.child.pidfd is None:
            at.append(now + POLL_FALLBACK_S)
        future = [a for a in at if a > now - 1e-3]
        timeout = (min(future) - now) if future else None
        if timeout is not None:
            timeout = max(timeout, 0.0) + 0.0005  # wake just after, not just before, the instant
        return timeout

    def _status_text(self, now: float) -> str:
        sup, c, opts = self.sup, self.clocks, self.sup.opts
        parts = [opts.name, f"attempt {sup.attempt}/{opts.max_restarts + 1}", f"up {_span(now - c.run_started)}",
                 f"alive {_span(now - c.last_life)} ago"]
        if opts.progress_timeout_s or sup.checkpoint:
            parts.append(f"progress {_span(now - c.last_progress)} ago")
        if sup.checkpoint:
            parts.append(f"checkpoint {sup.checkpoint[:40]}")
        if self.stop_started is not None:
            parts.append(f"stopping ({_span(now - self.stop_started)})")
        else:
            found = policy.next_deadline(opts, c)
            if found:
                parts.append(f"{found[1].value} deadline in {_span(max(0.0, found[0] - now))}")
        return " · ".join(parts)

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
        if sup.follower.skipped_generations != self.skipped_noted:
            lost = sup.follower.skipped_generations - self.skipped_noted
            self.skipped_noted = sup.follower.skipped_generations
            sup.say(f"output passthrough fell behind the log rotation: {lost} rotated log(s) of output were "
                    f"gone before they could be read (raise --log-max-size)")
        if got:
            sup.save_cursor()
            self.clocks.last_life = now
            sup.last_output_at = sup.last_life_at = sup.wall()
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
        sup.last_progress_at = sup.last_life_at = sup.wall()
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
                sup.last_life_at = sup.wall()
                sup._state_dirty = True
        if changed is None or (str(cp.parent), cp.name) in changed:
            content, line = _last_nonempty_line(cp)
            # an empty file is the middle of a rewrite (open with truncation, then write): not a change yet
            if content and content != self.checkpoint_content:
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
                sup.last_life_at = sup.wall()
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
                sup._own_children.add(self.probe.pid)
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
        sup.check_fence()
        self.stop_started = now
        self.stall = reason
        sup.stop_info = (reason.value if reason else "stop", sup.wall())
        if self.probe is not None:
            procs.killpg_quietly(self.probe.pid, signal.SIGKILL)
        sig = signal_name(sup.opts.kill_signal)
        if reason is not None:
            detail = self._stall_detail(reason, now)
            sup.emit(Event.STALL, reason=reason.value, detail=detail, checkpoint=sup.checkpoint)
            sup.say(f"{sup.opts.name} stalled ({reason.value}): {detail}; stopping it with {sig}, "
                    f"SIGKILL after {_fmt_s(sup.opts.grace_s)}")
        if child.keeper_verified(sup.job.path):
            procs.kill_quietly(child.keeper_pid, signal.SIGTERM)
        sup.emit(Event.KILL, signal=sig, pid=child.pid, reason=reason.value if reason else "stop")
        sup.next_deadline = None
        sup.write_state()

    def _force_kill(self, why: str) -> None:
        """Kill the attempt's whole tree now, ourselves (the keeper's tree is ours by ancestry)."""
        sup, child = self.sup, self.child
        sup.check_fence()
        self.forced = True
        if not self.sigkill_noted:
            self.sigkill_noted = True
            sup.emit(Event.KILL, signal="SIGKILL", pid=child.pid, reason=why)
        keeper_ok = child.keeper_verified(sup.job.path)
        if keeper_ok:
            for pid in procs.descendants(child.keeper_pid):
                procs.kill_quietly(pid, signal.SIGKILL)
        if procs.is_command(child.pid, child.start, sup.run_id):
            procs.killpg_quietly(child.pid, signal.SIGKILL)
        if keeper_ok and why.startswith("the keeper"):
            procs.kill_quietly(child.keeper_pid, signal.SIGKILL)

    def _ended(self) -> AttemptEnd:
        sup, child = self.sup, self.child
        child.reap()
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
            record = {}  # the keeper vanished before writing its record: the exit status is unknown
        if record.get("sigkill_at") and not self.sigkill_noted:
            # the keeper's SIGKILL and its exit fell in the same wake-up: record the kill all the same
            self.sigkill_noted = True
            sup.emit(Event.KILL, signal="SIGKILL", pid=child.pid)
        end = sup._end_from_record(record, child, self.stall)
        sup._record_exit(end)
        if sup.signals:
            raise _Stop(sup.signals[0])
        return end

    def close(self) -> None:
        if self.sup.status_line is not None:
            self.sup.status_line.hide()
        if self.probe is not None:
            procs.killpg_quietly(self.probe.pid, signal.SIGKILL)
            self.probe.wait()
            self._close_probe()
        if self.child.pidfd is not None:
            os.close(self.child.pidfd)
            self.child.pidfd = None


def _recorded_options(job: JobDir, state: dict, state_dir: StateDir) -> RunOptions:
    try:
        return replace(RunOptions.from_json(state["options"]), state_dir=str(state_dir.root))
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{job.state_file} has no usable options ({exc})") from None


def watch_job(state_dir: StateDir, name: str) -> int:
    """`hbwrap watch NAME`: adopt the job's orphaned run, with the options recorded in its state."""
    job = state_dir.existing_job(name)
    state = job.read_state()
    if state is None:
        _message(f"job {name} has never run; nothing to take over")
        return 1
    return Supervisor(_recorded_options(job, state, state_dir)).run(takeover_only=True)


def stop_job(state_dir: StateDir, name: str, timeout_s: float | None) -> int:
    """`hbwrap stop NAME`: ask a live supervisor to stop (SIGTERM), or stop an orphaned run ourselves."""
    job = state_dir.existing_job(name)
    state = job.read_state()
    if state is None or state.get("status") not in {s.value for s in ACTIVE_STATUSES}:
        _message(f"job {name} is not running")
        return 0
    opts = _recorded_options(job, state, state_dir)
    wait_s = timeout_s if timeout_s is not None else opts.grace_s + 15.0
    end = time.monotonic() + wait_s
    pid, start = state.get("supervisor_pid"), state.get("supervisor_start")
    if procs.is_supervisor(pid, start):
        renewed = state.get("lease_renewed_at")
        hung = isinstance(renewed, (int, float)) and time.time() - renewed > (state.get("lease_s") or opts.lease_s)
        if not hung:
            procs.kill_quietly(pid, signal.SIGTERM)
            while procs.is_same_process(pid, start) and time.monotonic() < end:
                time.sleep(0.02)
            if procs.is_same_process(pid, start):
                _message(f"job {name} did not stop within {_fmt_s(wait_s)} (supervisor pid {pid})")
                return 1
            after = job.read_state() or {}
            if after.get("status") in {s.value for s in ACTIVE_STATUSES}:
                # the supervisor died mid-stop: finish the job ourselves
                return stop_job(state_dir, name, max(1.0, end - time.monotonic()))
            return 0
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        sup = Supervisor(replace(opts, quiet=False), stdout_fd=devnull, stderr_fd=devnull)
        sup.signals.append(int(signal.SIGTERM))  # stop as soon as the run is adopted
        sup.stopped_by = "hbwrap stop; it had no live supervisor"
        code = sup.run(takeover_only=True)
    finally:
        os.close(devnull)
    return 0 if code == 128 + signal.SIGTERM else 1
