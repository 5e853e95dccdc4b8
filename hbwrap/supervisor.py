"""The supervisor: one loop that gathers observations, asks policy what to do, and does it.

There is exactly one wait: a poll over every descriptor that can bring news (signals, the log and files
through inotify, the keeper's pidfd and handshake, the probe, passthrough's POLLOUT) with the timeout of
the nearest instant policy says is due. Nothing else in here blocks: a slow reader of hbwrap's stdout, a
hanging webhook or a slow keeper cannot delay a deadline, a signal or a lease renewal.
"""
from __future__ import annotations

import collections
import os
import random
import select
import signal
import time
import traceback

from hbwrap import lease, policy, procs
from hbwrap.errors import HbwrapError
from hbwrap.jobstore import JobDir, StateDir, new_run_id, write_json_atomic
from hbwrap.launcher import Launcher, apply_env, attempt_markers, env_changes
from hbwrap.model import OWN_EVENTS, Event, Phase, RunRecord, Status, iso
from hbwrap.observe import PUMP_BUDGET, UNBOUNDED, Observer
from hbwrap.options import RunOptions, compile_pattern
from hbwrap.passthrough import Passthrough, StatusLine

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
POLL_FALLBACK_S = 0.1         # only when inotify is unavailable
ALERT_CLOSE_WAIT_S = 10.0
KEEPER_EXIT_WAIT_S = 2.0      # at the end: a released keeper exits at once; wait for it so it holds no pipe
MAX_WAIT_S = 3600.0
STATUS_LINE_EVERY_S = 1.0     # live status line refresh, only when stderr is a terminal
INHERITED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGALRM)


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
            # capped: poll() takes at most ~24.8 days, a deadline may be further; waking early is harmless
            ready = poller.poll(None if timeout_s is None else min(max(0.0, timeout_s), MAX_WAIT_S) * 1000)
        except InterruptedError:
            return set()
        return {fd for fd, _ in ready}


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
        self.by = by
        self.discard_output = discard_output
        self.use_inotify = use_inotify
        self.base_env = base_env if base_env is not None else procs.original_environ()
        self.launcher = launcher or Launcher(self.job, self.base_env, self._own_pids)
        self.waiter = waiter or PollWaiter()
        self.signals: list[int] = []
        self.signals_seen = 0
        self.stopped_by: str | None = None  # who sent the stop, when not a signal from outside (`hbwrap stop`)
        self.ignored_signals = [int(s) for s in INHERITED if signal.getsignal(s) == signal.SIG_IGN]
        self.messages: list[str] = []
        self.st: policy.RunState | None = None
        self.handle = None     # the attempt being watched (launcher.AttemptHandle)
        self.standby = None    # the keeper of the last ended attempt, standing by until released
        self.probe = None
        self.probe_killed = False
        self.alerter = None
        self.alert_warnings: collections.deque[str] = collections.deque()
        self.closing_since: float | None = None
        self.inotify = None
        self.wake_r = self.wake_w = -1
        self.catch_up = False
        self.recheck_keeper = False  # look at the keeper's record at the next wake-up, whatever inotify says
        self.next_status_at = 0.0
        self.state_write_failed = False
        self.my_start = procs.start_time(os.getpid())
        # tests only: HBWRAP_FAULT=loop:N makes a first supervisor (not a replacement) fail at loop turn N
        fault = os.environ.get("HBWRAP_FAULT", "")
        self.fault_at = int(fault[5:]) if by == "run" and fault.startswith("loop:") and fault[5:].isdigit() else None
        self._use_options(opts)

    def _use_options(self, opts: RunOptions) -> None:
        self.opts = opts
        if getattr(self, "passthrough", None) is not None:
            self.passthrough.close()
        self.passthrough = Passthrough(opts.quiet, self.stdout_fd, self.stderr_fd, note=self.say,
                                       log_paths=(self.job.log_file, self.job.index_file),
                                       discard=self.discard_output)
        self.status_line = (StatusLine(self.passthrough, self.stderr_fd)
                            if not opts.quiet and os.isatty(self.stderr_fd) else None)
        checkpoint = self.job.default_checkpoint if not opts.checkpoint_file else type(self.job.path)(opts.checkpoint_file)
        heartbeat = self.job.default_heartbeat if not opts.heartbeat_file else type(self.job.path)(opts.heartbeat_file)
        self.observer = Observer(self.job, [compile_pattern(p, "--progress-pattern") for p in opts.progress_patterns],
                                 [compile_pattern(p, "--fatal-pattern") for p in opts.fatal_patterns],
                                 checkpoint, heartbeat, self.passthrough, self.say)

    # --- messages, events, state -------------------------------------------------------------------
    def say(self, text: str) -> None:
        """An `hbwrap:` line on stderr (held back with --quiet until the run fails)."""
        if self.opts.quiet:
            self.messages.append(text)
        else:
            self.passthrough.message(f"hbwrap: {text}\n")

    def emit(self, event: Event, **fields) -> dict:
        rec = self.st.rec
        record = {"ts": iso(self.clock.wall()), "job": self.opts.name, "run_id": rec.run_id, "attempt": rec.attempt,
                  "event": event.value}
        record.update({k: v for k, v in fields.items() if v is not None})
        try:
            self.job.append_event(record)
        except OSError as exc:
            _message(f"cannot append to {self.job.events_file}: {exc.strerror}")
        if self.alerter is not None and event not in OWN_EVENTS and event is not Event.ALERT_FAILED:
            self.alerter.notify(record)
        return record

    def write_state(self) -> None:
        st, rec, now = self.st, self.st.rec, self.clock.mono()
        lease.check_fence(self.job, rec.run_id, rec.generation)
        rec.supervisor_pid, rec.supervisor_start = os.getpid(), self.my_start
        rec.lease_renewed_at, rec.lease_s, rec.updated_at = self.clock.wall(), self.opts.lease_s, now
        rec.next_deadline_at, rec.next_deadline = policy.recorded_deadline(st, self.opts)
        held = self.handle or self.standby
        rec.keeper_pid, rec.keeper_start = (held.keeper_pid, held.keeper_start) if held else (None, None)
        try:
            write_json_atomic(self.job.state_file, rec.to_doc(self.clock.wall() - now))
            self.state_write_failed = False
        except OSError as exc:
            if not self.state_write_failed:
                self.say(f"cannot write {self.job.state_file}: {exc.strerror}; it keeps its last good version")
            self.state_write_failed = True
        policy.note_state_written(st, now, self.opts)

    def _own_pids(self) -> set[int]:
        """Processes of ours (probes, alert commands) that are never swept as part of an attempt."""
        pids = {self.probe.pid} if self.probe is not None else set()
        if self.alerter is not None:
            pids |= self.alerter.own_pids
        return pids

    def start_alerter(self) -> None:
        opts = self.opts
        if not (opts.alert_cmd or opts.alert_webhooks or opts.ping_url):
            return
        from hbwrap.alerts.delivery import Alerter

        self.alerter = Alerter(job=opts.name, alert_cmd=opts.alert_cmd, webhooks=list(opts.alert_webhooks),
                               webhook_format=opts.webhook_format,
                               alert_on=frozenset(opts.alert_on) if opts.alert_on is not None else None,
                               ping_url=opts.ping_url, record=lambda fields: self.emit(Event.ALERT_FAILED, **fields),
                               delivered=self._alert_delivered, output_tail=self.observer.output_tail,
                               warn=self.alert_warnings.append)  # printed by the loop (thread-safe deque)

    def _alert_delivered(self, fields: dict) -> None:
        """A delivery went through: keep what a successful alert command printed (bounded, masked) in the events."""
        if fields.get("channel") == "alert-cmd" and fields.get("output"):
            self.emit(Event.ALERT_OUTPUT, channel=fields["channel"], alert_event=fields.get("alert_event"),
                      output=fields["output"])

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

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        if os.getpid() != 1:
            return
        # as PID 1, reap exited processes we inherited (never our own keeper or probe: their status matters)
        ours = self._own_pids() | {h.keeper_pid for h in (self.handle, self.standby) if h is not None}
        for pid in procs.zombie_children(1):
            if pid not in ours:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    # --- run ---------------------------------------------------------------------------------------
    def run(self, if_running: str = "skip", takeover_only: bool = False) -> int:
        """Supervise the job: take over its orphaned run if it has one, else start a new run.

        Returns hbwrap's exit code. With `takeover_only` (hbwrap watch), exit 1 if there is nothing to adopt.
        """
        from hbwrap import takeover

        self.state_dir.ensure()
        self.job.ensure()
        lock = lease.JobLock(self.job, self.opts.name, self.opts.lease_s, self.opts.verbose)
        busy = lock.acquire(if_running, takeover_only)
        if busy is not None:
            return busy
        try:
            doc = takeover.orphan_doc(self.job, self.clock.wall())
            if doc is None and takeover_only:
                _message(f"job {self.opts.name} has no orphaned run to take over")
                return 1
            self._install_signals()
            if doc is not None:
                takeover.adopt(self, doc, lock.killed_hung)
            else:
                self._start_run()
            self._setup_watches()
            return self._loop()
        except lease.SteppedDown as exc:
            _message(str(exc))
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
        if self.alerter is not None:  # the loop did not get to close it (an error): close it here
            self.alerter.close(ALERT_CLOSE_WAIT_S)
            self._print_warnings()
        for handle in (self.handle, self.standby):
            if handle is not None:
                handle.wait_released(KEEPER_EXIT_WAIT_S)  # so that it holds none of our pipes when we exit
                handle.close()
        if self.probe is not None:
            self.probe.kill()
        follower = self.observer.follower
        self.passthrough.flush_for(ALERT_CLOSE_WAIT_S, follower.position if follower is not None else None)
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
        self.st = policy.RunState(rec, phase=Phase.LAUNCH, stopped_by=self.stopped_by)
        self.observer.follow_new(rec.run_id)
        self.write_state()
        self.start_alerter()
        self.emit(Event.RUN_START, command=list(self.opts.command), supervisor_pid=os.getpid())

    def _setup_watches(self) -> None:
        if not self.use_inotify:
            return
        from hbwrap.inotify import Inotify

        try:
            self.inotify = Inotify()
            for d in self.observer.watched_dirs():
                self.inotify.watch_dir(d)
        except OSError as exc:
            if self.inotify is not None:
                self.inotify.close()
            self.inotify = None
            if self.opts.verbose:
                _message(f"inotify unavailable ({exc.strerror or exc}); checking files every {POLL_FALLBACK_S}s")

    # --- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> int:
        st = self.st
        turns = 0
        while not self._closed(self.clock.mono()):
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
                self._do(action)
            self._after(now)
        return st.exit_code if st.exit_code is not None else 125

    def _closed(self, now: float) -> bool:
        """The run is over: done once alerts in flight are delivered (up to 10 s, SPEC §9) — waited for in the
        loop's own poll, so that nothing else is held up meanwhile."""
        if self.st.phase is not Phase.CLOSING:
            return False
        if self.alerter is None:
            return True
        if self.closing_since is None:
            self.closing_since = now
            self.alerter.begin_close()
        if self.alerter.in_flight() and now < self.closing_since + ALERT_CLOSE_WAIT_S:
            return False
        self.alerter.abandon(now - self.closing_since)
        self._print_warnings()
        self.alerter = None
        return True

    def _poll_fds(self) -> list[tuple[int, int]]:
        fds = [(self.wake_r, select.POLLIN)]
        if self.inotify is not None:
            fds.append((self.inotify.fd, select.POLLIN))
        for source in (self.handle, self.probe):
            if source is not None:
                fds.extend((fd, select.POLLIN) for fd in source.fds())
        fds.extend((fd, select.POLLOUT) for fd in self.passthrough.poll_fds())
        if self.alerter is not None and self.alerter.fileno() >= 0:
            fds.append((self.alerter.fileno(), select.POLLIN))
        return fds

    def _timeout(self, now: float) -> float | None:
        if self.observer.more_output or self.catch_up or (self.recheck_keeper and self.handle is not None):
            return 0.0
        at = [policy.wake_at(self.st, self.opts, now)]
        if self.closing_since is not None:
            at.append(self.closing_since + ALERT_CLOSE_WAIT_S)
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
        if self.wake_r in ready:
            self._drain_wake()
        if len(self.signals) > self.signals_seen:
            obs.signals = self.signals[self.signals_seen:]
            self.signals_seen = len(self.signals)
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
        if self.alerter is not None and self.alerter.fileno() in ready:
            self.alerter.drain_wakeups()
        self._print_warnings()
        self.passthrough.ready(ready)
        self.passthrough.catch_up(self.observer.follower.position)
        self.passthrough.check_lag(time.monotonic())
        return obs

    def _print_warnings(self) -> None:
        """Alert failures the delivery threads reported: one line each, also under --quiet (SPEC §9)."""
        while self.alert_warnings:
            self.passthrough.message(f"hbwrap: {self.alert_warnings.popleft()}\n")

    def _observe_attempt(self, obs: policy.Observations, ready: set[int], changed, now: float, first: bool) -> None:
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
        if first or h.pidfd is None or h.pidfd in ready or self.observer.keeper_changed(changed):
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
        if self.status_line is not None and st.phase not in (Phase.CLOSING, Phase.DONE) and now >= self.next_status_at:
            self.status_line.draw(self._status_text(now), now)
            self.next_status_at = now + STATUS_LINE_EVERY_S

    def _status_text(self, now: float) -> str:
        rec, opts = self.st.rec, self.opts
        c = policy.clocks_of(rec)
        parts = [opts.name, f"attempt {rec.attempt}/{opts.max_restarts + 1}", f"up {_span(now - c.run_started)}",
                 f"alive {_span(now - c.last_life)} ago"]
        if opts.progress_timeout_s or rec.checkpoint:
            parts.append(f"progress {_span(now - c.last_progress)} ago")
        if rec.checkpoint:
            parts.append(f"checkpoint {rec.checkpoint[:40]}")
        if self.st.phase is Phase.STOPPING:
            parts.append(f"stopping ({_span(now - (rec.stop_started_at if rec.stop_started_at is not None else now))})")
        elif self.st.phase is Phase.BACKOFF and rec.restart_at is not None:
            parts.append(f"restart in {_span(max(0.0, rec.restart_at - now))}")
        else:
            at, kind = policy.recorded_deadline(self.st, opts)
            if at is not None:
                parts.append(f"{kind} deadline in {_span(max(0.0, at - now))}")
        return " · ".join(parts)

    # --- actions -----------------------------------------------------------------------------------
    def _do(self, action: policy.Action) -> None:
        getattr(self, "_do_" + action.kind)(**action.args)

    def _do_emit(self, event: Event, fields: dict) -> None:
        self.emit(event, **fields)

    def _do_say(self, text: str) -> None:
        self.say(text)

    def _do_write_state(self) -> None:
        self.write_state()
        self.recheck_keeper = self.handle is not None  # a safety net for a change inotify did not report

    def _do_launch(self, resume_from: str | None) -> None:
        rec, opts = self.st.rec, self.opts
        self.observer.set_baseline(self.observer.baseline())  # before the command can change the files
        changes = env_changes(opts, rec, resume_from, self.observer.checkpoint_path, self.observer.heartbeat_path,
                              self.base_env)
        spec = {"run_id": rec.run_id, "attempt": rec.attempt, "name": opts.name, "state_dir": str(self.state_dir.root),
                "command": list(opts.command), "cwd": opts.cwd, "pty": opts.pty, "kill_signal": opts.kill_signal,
                "grace_s": opts.grace_s, "log_max_size": opts.log_max_size, "ignored_signals": self.ignored_signals,
                "stdin_inherit": os.isatty(0), "env_set": changes[0], "env_unset": changes[1],
                "self_heal": opts.self_heal, "supervisor_pid": os.getpid(), "supervisor_start": self.my_start,
                "lease_s": opts.lease_s}
        markers = attempt_markers(rec, self.observer.heartbeat_path)
        hold = (self.stdout_fd, self.stderr_fd) if opts.self_heal else None
        self.handle = self.launcher.launch(opts, rec, spec, markers, hold)

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
        env = apply_env(self.base_env, env_changes(self.opts, self.st.rec, None, self.observer.checkpoint_path,
                                                   self.observer.heartbeat_path, self.base_env))
        env["HBWRAP_CHILD_PID"] = str(self.st.rec.child_pid)
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

    def _do_fail(self, message: str) -> None:
        raise HbwrapError(message)

    def _do_replay_quiet(self) -> None:
        if not self.opts.quiet:
            return
        pt = self.passthrough
        if pt.dropped:
            pt.message(f"hbwrap: output of this run truncated to its last {pt.QUIET_CAP // 1024} KiB; "
                       f"the full log is {self.job.log_file}\n")
        pt.replay()
        for text in self.messages:
            pt.message(f"hbwrap: {text}\n")
        pt.message(f"hbwrap: full output log: {self.job.log_file}\n")

