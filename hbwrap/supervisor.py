"""The supervisor: one loop that gathers observations, asks policy what to do, and does it.

There is exactly one wait: a poll over every descriptor that can bring news (signals, the log and files
through inotify, the keeper's pidfd and handshake, the probe, the alert threads, passthrough's POLLOUT)
with the timeout of the nearest instant policy says is due. Nothing else in here blocks: a slow reader of
hbwrap's stdout, a hanging webhook or a slow keeper cannot delay a deadline, a signal or a lease renewal.
"""
from __future__ import annotations

import os
import random
import select
import signal
import time
import traceback
from pathlib import Path

from hbwrap import lease, policy, procs
from hbwrap.errors import HbwrapError
from hbwrap.jobstore import JobDir, StateDir, new_run_id
from hbwrap.journal import Journal, message
from hbwrap.launcher import Launcher, attempt_markers, env_changes, keeper_spec, probe_env
from hbwrap.model import Event, Phase, RunRecord, Status
from hbwrap.observe import POLL_FALLBACK_S, PUMP_BUDGET, UNBOUNDED, Observer
from hbwrap.options import RunOptions, compile_pattern
from hbwrap.passthrough import Passthrough, StatusLine

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
INHERITED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGALRM)
KEEPER_EXIT_WAIT_S = 2.0      # at the end: a released keeper exits at once; wait for it so it holds no pipe
STATUS_LINE_EVERY_S = 1.0     # live status line refresh, only when stderr is a terminal
MAX_WAIT_S = 3600.0           # poll() takes at most ~24.8 days; waking early is harmless


class SystemClock:
    """Monotonic time for every deadline, wall time only to record."""

    mono = staticmethod(time.monotonic)
    wall = staticmethod(time.time)


class PollWaiter:
    """The loop's one wait."""

    def wait(self, fds: list[tuple[int, int]], timeout_s: float | None) -> set[int]:
        poller = select.poll()
        for fd, events in fds:
            poller.register(fd, events)
        try:
            ready = poller.poll(None if timeout_s is None else min(max(0.0, timeout_s), MAX_WAIT_S) * 1000)
        except InterruptedError:
            return set()
        return {fd for fd, _ in ready}


class SignalPipe:
    """Stop signals become entries of `received` and a byte on a pipe the loop polls (no work in handlers)."""

    def __init__(self, ignored: list[int]):
        self.ignored = ignored
        self.received: list[int] = []
        self.seen = 0
        self.fd = -1

    def install(self) -> None:
        self.fd, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            if int(sig) not in self.ignored:
                signal.signal(sig, lambda signum, frame: self.received.append(signum))
        if os.getpid() == 1:  # a container's init: orphans of the whole namespace come to us
            signal.signal(signal.SIGCHLD, lambda *_: None)

    def new(self) -> list[int]:
        fresh = self.received[self.seen:]
        self.seen = len(self.received)
        return fresh

    def drain(self, ours: set[int]) -> None:
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass
        if os.getpid() != 1:
            return
        # as PID 1, reap exited processes we inherited (never our own keeper or probe: their status matters)
        for pid in procs.zombie_children(1):
            if pid not in ours:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass


class Supervisor:
    """Runs one job to its end: attempts, deadlines, kills, restarts, events and state."""

    def __init__(self, opts: RunOptions, *, clock=None, launcher=None, waiter=None, rng: random.Random | None = None,
                 stdout_fd: int = 1, stderr_fd: int = 2, by: str = "run", base_env: dict[str, str] | None = None,
                 discard_output: bool = False, use_inotify: bool = True):
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.state_dir = StateDir(opts.state_dir)
        self.job: JobDir = self.state_dir.job(opts.name)
        self.stdout_fd, self.stderr_fd = stdout_fd, stderr_fd
        self.by, self.discard_output, self.use_inotify = by, discard_output, use_inotify
        self.base_env = base_env if base_env is not None else procs.original_environ()
        self.launcher = launcher or Launcher(self.job, self.base_env, self._own_pids)
        self.waiter = waiter or PollWaiter()
        self.signals = SignalPipe([int(s) for s in INHERITED if signal.getsignal(s) == signal.SIG_IGN])
        self.stopped_by: str | None = None  # who sent the stop, when not a signal from outside (`hbwrap stop`)
        self.st: policy.RunState | None = None
        self.handle = None     # the attempt being watched (launcher.AttemptHandle)
        self.standby = None    # the keeper of the last ended attempt, standing by until released
        self.probe = None
        self.probe_killed = False
        self.inotify = None
        self.catch_up = False        # the first wake-up after a takeover scans everything unread
        self.recheck_keeper = False  # look at the keeper's record at the next wake-up, whatever inotify says
        self.next_status_at = 0.0
        self.my_start = procs.start_time(os.getpid())
        # tests only: HBWRAP_FAULT=loop:N makes a first supervisor (not a replacement) fail at loop turn N
        fault = os.environ.get("HBWRAP_FAULT", "")
        self.fault_at = int(fault[5:]) if by == "run" and fault.startswith("loop:") and fault[5:].isdigit() else None
        self.journal = None
        self.use_options(opts)

    def use_options(self, opts: RunOptions) -> None:
        """The run's options: this invocation's, or those recorded by the supervisor of a run taken over."""
        self.opts = opts
        if getattr(self, "passthrough", None) is not None:
            self.passthrough.close()
        self.passthrough = Passthrough(opts.quiet, self.stdout_fd, self.stderr_fd, note=self.say,
                                       log_paths=(self.job.log_file, self.job.index_file),
                                       discard=self.discard_output)
        self.status_line = (StatusLine(self.passthrough, self.stderr_fd)
                            if not opts.quiet and os.isatty(self.stderr_fd) else None)
        checkpoint = Path(opts.checkpoint_file) if opts.checkpoint_file else self.job.default_checkpoint
        heartbeat = Path(opts.heartbeat_file) if opts.heartbeat_file else self.job.default_heartbeat
        self.observer = Observer(self.job, [compile_pattern(p, "--progress-pattern") for p in opts.progress_patterns],
                                 [compile_pattern(p, "--fatal-pattern") for p in opts.fatal_patterns],
                                 checkpoint, heartbeat, self.passthrough, self.say,
                                 attempt=lambda: self.handle,
                                 cannot_write=lambda path, err: self.journal.cannot_write(path, err))
        if self.journal is None:
            self.journal = Journal(self.job, self.clock, opts, self.passthrough)
            self.journal.my_start = self.my_start
        else:
            self.journal.use(opts, self.passthrough)

    def say(self, text: str) -> None:
        self.journal.say(text)

    def emit(self, event: Event, **fields) -> dict:
        return self.journal.emit(event, **fields)

    def write_state(self) -> None:
        self.journal.write_state(self.handle or self.standby)

    def _own_pids(self) -> set[int]:
        """Processes of ours (probes, alert commands) that are never swept as part of an attempt."""
        pids = {self.probe.pid} if self.probe is not None else set()
        return pids | (self.journal.own_pids() if self.journal is not None else set())

    # --- run ---------------------------------------------------------------------------------------
    def run(self, if_running: str = "skip", takeover_only: bool = False) -> int:
        """Supervise the job: take over its orphaned run if it has one, else start a new run.

        Returns hbwrap's exit code. With `takeover_only` (hbwrap watch), exit 1 if there is nothing to adopt.
        """
        from hbwrap import takeover

        self.state_dir.ensure()
        self.job.ensure()  # refuses planted files before the lock file is opened
        lock = lease.JobLock(self.job, self.opts.name, self.opts.lease_s, self.opts.verbose)
        busy = lock.acquire(if_running, takeover_only)
        if busy is not None:
            return busy
        try:
            doc = takeover.orphan_doc(self.job, self.clock.wall())
            if doc is None and takeover_only:
                message(f"job {self.opts.name} has no orphaned run to take over")
                return 1
            self.signals.install()
            if doc is not None:
                takeover.adopt(self, doc, lock.killed_hung)
            else:
                self._start_run()
            self._setup_watches()
            return self._loop()
        except lease.SteppedDown as exc:
            message(str(exc))
            return exc.exit_code
        except HbwrapError:
            raise
        except Exception:
            self._record_crash()
            raise
        finally:
            lock.release()
            self._cleanup()

    def _record_crash(self) -> None:
        """An unexpected exception: into the event log with its traceback; the keeper's replacement goes on."""
        if self.st is None:
            return
        try:
            self.emit(Event.CRASH, detail=traceback.format_exc()[-8000:])
        except Exception:
            pass

    def _cleanup(self) -> None:
        self.journal.close()
        for handle in (self.handle, self.standby):
            if handle is not None:
                handle.wait_released(KEEPER_EXIT_WAIT_S)  # so that it holds none of our pipes when we exit
                handle.close()
        if self.probe is not None:
            self.probe.kill()
        follower = self.observer.follower
        self.passthrough.flush_for(10.0, follower.position if follower is not None else None)
        self.passthrough.close()
        self.observer.close()
        if self.inotify is not None:
            self.inotify.close()

    def _start_run(self) -> None:
        previous = lease.read_holder(self.job) or {}
        generation = previous.get("generation") if isinstance(previous.get("generation"), int) else 0
        now = self.clock.mono()
        rec = RunRecord(name=self.opts.name, run_id=new_run_id(), status=Status.STARTING.value,
                        generation=generation + 1, started_at=now, lease_s=self.opts.lease_s,
                        command=list(self.opts.command), options=self.opts.to_json())
        self.st = self.journal.st = policy.RunState(rec, phase=Phase.LAUNCH, stopped_by=self.stopped_by)
        self.observer.follow_new(rec.run_id)
        self.write_state()
        self.journal.start_alerts(self.observer.output_tail)
        self.emit(Event.RUN_START, command=list(self.opts.command), supervisor_pid=os.getpid())

    def _setup_watches(self) -> None:
        if self.use_inotify:
            self.inotify = self.observer.open_inotify(self.opts.verbose)

    # --- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> int:
        st = self.st
        turns = 0
        while not (st.phase is Phase.CLOSING and self.journal.alerts_closed(self.clock.mono())):
            now = self.clock.mono()
            ready = self.waiter.wait(self._poll_fds(), self._timeout(now))
            now = self.clock.mono()
            if now - st.state_written_at > 1.5 * policy.renew_interval_s(self.opts) and st.phase is not Phase.CLOSING:
                # away longer than a renewal allows (stopped, starved): another supervisor may hold the run now,
                # and then this one must step down before it signals or writes anything
                lease.check_fence(self.job, st.rec.run_id, st.rec.generation)
            turns += 1
            if turns == self.fault_at:
                raise RuntimeError(f"HBWRAP_FAULT: injected failure at loop turn {turns}")
            obs = self._gather(ready, now)
            for action in policy.advance(st, obs, now, self.opts, self.rng):
                self._act(action)
            self._after(now)
        return st.exit_code if st.exit_code is not None else 125

    def _poll_fds(self) -> list[tuple[int, int]]:
        fds = [(self.signals.fd, select.POLLIN)]
        if self.inotify is not None:
            fds.append((self.inotify.fd, select.POLLIN))
        for source in (self.handle, self.probe):
            if source is not None:
                fds.extend((fd, select.POLLIN) for fd in source.fds())
        fds.extend((fd, select.POLLOUT) for fd in self.passthrough.poll_fds())
        if self.journal.alert_fd() is not None:
            fds.append((self.journal.alert_fd(), select.POLLIN))
        return fds

    def _timeout(self, now: float) -> float | None:
        if self.observer.more_output or self.catch_up or (self.recheck_keeper and self.handle is not None):
            return 0.0
        at = [policy.wake_at(self.st, self.opts, now), self.journal.close_deadline()]
        if self.status_line is not None:
            at.append(self.next_status_at)
        if self.inotify is None or (self.handle is not None and self.handle.pidfd is None):
            at.append(now + POLL_FALLBACK_S)
        future = [a for a in at if a is not None]
        if not future:
            return None
        return max(0.0, min(future) - now) + 0.0005  # wake just after, not just before, the instant

    def _gather(self, ready: set[int], now: float) -> policy.Observations:
        obs = policy.Observations()
        if self.signals.fd in ready:
            self.signals.drain(self._own_pids() | {h.keeper_pid for h in (self.handle, self.standby) if h})
        obs.signals = self.signals.new()
        changed = None
        if self.inotify is not None:
            changed = self.inotify.read() if self.inotify.fd in ready else set()
        first, self.catch_up = self.catch_up, False
        recheck, self.recheck_keeper = self.recheck_keeper, False
        self.observer.pump(obs, UNBOUNDED if first else PUMP_BUDGET)
        self.observer.check_files(None if first else changed, obs)
        if self.handle is not None:
            self._observe_attempt(obs, ready, changed, now, first or recheck)
        if self.probe is not None and (self.probe_killed or not self.probe.fds() or self.probe.pidfd in ready):
            code = -1 if self.probe_killed else self.probe.result()
            if code is not None:
                obs.probe_exit, self.probe, self.probe_killed = code, None, False
        if self.journal.alert_fd() in ready:
            self.journal.alerts_woke()
        self.journal.print_warnings()
        self.passthrough.ready(ready)
        self.passthrough.catch_up(self.observer.follower.position)
        self.passthrough.check_lag(time.monotonic())
        return obs

    def _observe_attempt(self, obs: policy.Observations, ready: set[int], changed, now: float, look: bool) -> None:
        h, st = self.handle, self.st
        if st.phase is Phase.STARTING:
            if h.handshake_fd in ready:
                obs.launched = h.handshake()
            elif st.launch_deadline is not None and now >= st.launch_deadline:
                obs.launched = h.abandon(f"no handshake within {policy.HANDSHAKE_TIMEOUT_S:.0f}s")
            # the attempt may end as fast as it started, the record's change seen here: look again next time
            self.recheck_keeper = obs.launched is not None
            return
        if st.phase not in (Phase.RUNNING, Phase.STOPPING):
            return
        if look or h.pidfd is None or h.pidfd in ready or self.observer.keeper_changed(changed):
            record = h.ended_record()
            if record is None and not h.keeper_alive():
                h.close_pidfd()
                record = h.ended_record()  # written just before the keeper died
                if record is None:
                    self.observer.drain(obs)
                    obs.keeper_gone, obs.command_alive = True, h.command_alive()
            if record is not None:
                self.observer.drain(obs)
                obs.ended = record
        if st.unkept:
            obs.group_gone = h.group_gone()

    def _after(self, now: float) -> None:
        st = self.st
        if self.handle is not None and st.phase not in (Phase.STARTING, Phase.RUNNING, Phase.STOPPING):
            if self.standby is not None and self.standby is not self.handle:
                self.standby.release()
                self.standby.close()
            self.handle.close_pidfd()
            self.standby, self.handle = self.handle, None  # its keeper stands by until released
        elif st.phase is Phase.RUNNING and self.standby is not None:
            self.standby.release()  # the new attempt's keeper is up: the previous one may go
            self.standby.close()
            self.standby = None
        if self.status_line is not None and st.phase is not Phase.CLOSING and now >= self.next_status_at:
            self.status_line.draw(self.journal.status_text(now), now)
            self.next_status_at = now + STATUS_LINE_EVERY_S

    # --- actions (policy.Action kinds: _do_<kind>) ---------------------------------------------------
    def _do_emit(self, event: Event, fields: dict) -> None:
        self.emit(event, **fields)

    def _do_write_state(self) -> None:
        self.write_state()
        self.recheck_keeper = self.handle is not None  # a safety net for a change inotify did not report

    def _do_launch(self, resume_from: str | None) -> None:
        rec, opts, obs = self.st.rec, self.opts, self.observer
        obs.set_baseline(obs.baseline())  # before the command can change the files
        changes = env_changes(opts, rec, resume_from, obs.checkpoint_path, obs.heartbeat_path, self.base_env)
        spec = keeper_spec(opts, rec, changes, str(self.state_dir.root), self.signals.ignored, self.my_start)
        hold = (self.stdout_fd, self.stderr_fd) if opts.self_heal else None
        self.handle = self.launcher.launch(opts, rec, spec, attempt_markers(rec, obs.heartbeat_path), hold)

    def _do_request_stop(self) -> None:
        self.handle.request_stop()

    def _do_force_kill(self, why: str, signal: int | None = None) -> None:
        self.handle.force_kill()

    def _do_signal_group(self, signal: int, why: str | None = None) -> None:
        self.handle.signal_group(signal)

    def _do_sweep(self, why: str) -> None:
        handle = self.handle or self.standby
        pids = handle.sweep() if handle is not None else []
        if pids:
            self.emit(Event.KILL, signal="SIGKILL", pid=min(pids), reason=why)

    def _do_start_probe(self) -> None:
        env = probe_env(self.opts, self.st.rec, self.base_env, self.observer.checkpoint_path,
                        self.observer.heartbeat_path)
        self.probe = self.launcher.start_probe(self.opts.probe, env, self.opts.cwd)
        if self.probe is None:
            self.st.probe_started_at = None
            self.st.probe_failures += 1
            self.st.probe_detail = "it could not be started"

    def _do_kill_probe(self) -> None:
        if self.probe is not None:
            self.probe.kill()
            self.probe_killed = True

    def _do_release_keeper(self) -> None:
        for handle in (self.handle, self.standby):
            if handle is not None:
                handle.release()

    def _act(self, action: policy.Action) -> None:
        kind = action.kind
        if kind == "say":
            self.say(**action.args)
        elif kind == "replay_quiet":
            self.journal.replay_quiet()
        elif kind == "fail":
            raise HbwrapError(action.args["message"])
        else:
            getattr(self, "_do_" + kind)(**action.args)
