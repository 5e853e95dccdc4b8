"""The supervisor: one loop that gathers observations, asks policy what to do, and does it.

There is exactly one wait: a poll over every descriptor that can bring news (signals, the log and files
through inotify, the keeper's pidfd and handshake, the probe, the alert threads, passthrough's POLLOUT)
with the timeout of the nearest instant policy says is due. Nothing else in here blocks: a slow reader of
hbwrap's stdout, a hanging webhook or a slow keeper cannot delay a deadline, a signal or a lease renewal.
"""
from __future__ import annotations

import gc
import os
import select
import signal
import time

from hbwrap import lease, policy, procs
from hbwrap.errors import HbwrapError
from hbwrap.jobstore import JobDir, StateDir, new_run_id
from hbwrap.incidents import Incidents
from hbwrap.journal import Journal, message
from hbwrap.attempt import AttemptProcesses
from hbwrap.launcher import Launcher
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
# Files are polled (every EARLY_POLL_S) for this long before the inotify watch is made: a run that ends
# sooner never pays for tearing a watch down, 10-20 ms in close() while the kernel waits out an SRCU
# grace period, a tenth of a `hbwrap run -- true`. The early polls are frequent because a command's first
# lines (its banner, then perhaps a hang) start its response deadline: seeing them late delays it (at most
# 50 polls, a few ms of CPU; 10 ms polls for 0.5 s made --response-timeout fire ~25 ms late in the bench).
INOTIFY_AFTER_S = 0.1
EARLY_POLL_S = 0.002


class LazyRandom:
    """A random.Random made when first used (back-off jitter): a run that never backs off never imports random."""

    def __init__(self):
        self._rng = None

    def __getattr__(self, name: str):
        if self._rng is None:
            import random

            self._rng = random.Random()
        return getattr(self._rng, name)


class SystemClock:
    """Monotonic time for every deadline, wall time only to record.

    "Monotonic" is CLOCK_BOOTTIME: it never goes back and, unlike CLOCK_MONOTONIC, it counts while the host
    is suspended, so --timeout and --deadline (wall-clock limits) and a shared lease (lease_rules) all
    know, when a laptop or VM wakes up, how much time really passed.
    """

    @staticmethod
    def mono() -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

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

    def __init__(self, opts: RunOptions, *, clock=None, launcher=None, waiter=None, rng=None,
                 stdout_fd: int = 1, stderr_fd: int = 2, by: str = "run", base_env: dict[str, str] | None = None,
                 discard_output: bool = False, use_inotify: bool = True):
        self.clock = clock or SystemClock()
        self.rng = rng or LazyRandom()
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
        self.attempt = AttemptProcesses(self.launcher)
        self.lease = None            # --lease-url: lease_shared.SharedLease
        self.host = opts.host or os.uname().nodename  # (socket.gethostname()) restart_pending says where to answer
        self.inotify = None
        self._watch_at: float | None = None   # when to make the inotify watch (INOTIFY_AFTER_S)
        self._look_at_all = False              # the watch is new: look at every file once more
        self.catch_up = False        # the first wake-up after a takeover scans everything unread
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
        checkpoint = opts.checkpoint_file or self.job.default_checkpoint
        heartbeat = opts.heartbeat_file or self.job.default_heartbeat
        self.observer = Observer(self.job, [compile_pattern(p, "--progress-pattern") for p in opts.progress_patterns],
                                 [compile_pattern(p, "--fatal-pattern") for p in opts.fatal_patterns],
                                 checkpoint, heartbeat, self.passthrough, self.say,
                                 [compile_pattern(p, "--retry-after-pattern") for p in opts.retry_after_patterns],
                                 repeat=bool(opts.repeat_timeout_s), attempt=lambda: self.attempt.handle,
                                 cannot_write=lambda path, err: self.journal.cannot_write(path, err))
        self.incidents = Incidents(self.job, opts)
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
        self.journal.write_state(self.attempt.held())

    def _own_pids(self) -> set[int]:
        """Processes of ours (probes, alert commands) that are never swept as part of an attempt."""
        attempt = getattr(self, "attempt", None)
        pids = attempt.own_pids() if attempt is not None else set()
        return pids | (self.journal.own_pids() if self.journal is not None else set())

    # --- run ---------------------------------------------------------------------------------------
    def run(self, if_running: str = "skip", takeover_only: bool = False) -> int:
        """Supervise the job: take over its orphaned run if it has one, else start a new run.

        Returns hbwrap's exit code. With `takeover_only` (hbwrap watch), exit 1 if there is nothing to adopt.
        """
        from hbwrap.orphans import orphan_doc

        self.state_dir.ensure()
        self.job.ensure()  # refuses planted files before the lock file is opened
        lock = lease.JobLock(self.job, self.opts.name, self.opts.lease_s, self.opts.verbose)
        busy = lock.acquire(if_running, takeover_only)
        if busy is not None:
            return busy
        try:
            doc = orphan_doc(self.job, self.clock.wall())
            if doc is None and takeover_only:
                message(f"job {self.opts.name} has no orphaned run to take over")
                return 1
            claim = None
            lease_opts = self.opts
            if doc is not None:
                from hbwrap import takeover  # adopting: the code a run that starts afresh never needs

                lease_opts = takeover.recorded_options(self.job, doc, self.state_dir)
            if lease_opts.lease_url:
                busy, claim = self._claim_lease(lease_opts, doc, if_running)
                if busy is not None:
                    return busy
            self.signals.install()
            if doc is not None:
                takeover.adopt(self, doc, lock.killed_hung)
            elif getattr(claim, "continuing", False):
                from hbwrap import takeover

                takeover.continue_across_hosts(self, claim)
            else:
                self._start_run(claim.generation if claim is not None else None)
            if self.lease is not None:
                self._share_lease(claim)
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
        import traceback

        try:
            self.emit(Event.CRASH, detail=traceback.format_exc()[-8000:])
        except Exception:
            pass

    def _cleanup(self) -> None:
        self.journal.close()
        self.attempt.close(KEEPER_EXIT_WAIT_S)
        if self.lease is not None:
            self.lease.close()
        follower = self.observer.follower
        self.passthrough.flush_for(10.0, follower.position if follower is not None else None)
        self.passthrough.close()
        self.observer.close()
        if self.inotify is not None:
            self.inotify.close()

    def _claim_lease(self, opts: RunOptions, doc: dict | None, if_running: str):
        """--lease-url: the row first (exit code, claim). A busy row follows --if-running; a run of this host
        being taken over keeps its holder id, and is adopted even when its row was lost (to stop it)."""
        from hbwrap.lease_shared import SharedLease

        self.lease = SharedLease(opts)
        holder = doc.get("lease_holder") if doc is not None else None
        run_id = doc.get("run_id") if doc is not None else new_run_id()
        while True:
            got = self.lease.claim(holder, run_id)
            if self.lease.generation is not None or doc is not None:
                return None, got
            where = f" on {got.holder_host} (its lease expires in {max(0.0, got.expires_in_s):.0f}s)"
            if if_running == "skip":
                if opts.verbose:
                    message(f"job {opts.name} is already running{where}; skipping this run")
                return 0, None
            if if_running == "fail":
                message(f"job {opts.name} is already running{where}")
                return 75, None
            time.sleep(max(0.2, min(opts.lease_s / 3, got.expires_in_s + 0.1)))  # --if-running wait; no run yet

    def _share_lease(self, claim) -> None:
        st, lease_ = self.st, self.lease
        st.shared = True
        st.rec.host, st.rec.lease_holder = lease_.host, lease_.holder
        if lease_.generation is not None:
            st.rec.generation = lease_.generation  # HBWRAP_FENCE: the row's generation, across hosts
            st.rec.lease_valid_until, st.lease_sent_at = lease_.valid_until, lease_.sent_at
        else:  # adopted a run of this host whose row another host took meanwhile: stop its command, go
            st.lease_lost = (f"the lease was taken by {claim.holder_host} while no supervisor of this host held "
                             f"it")
            self.emit(Event.LEASE_LOST, detail=st.lease_lost)
        lease_.start()
        self.write_state()

    def _start_run(self, generation: int | None = None) -> None:
        previous = lease.read_holder(self.job) or {}
        if generation is None:
            last = previous.get("generation") if isinstance(previous.get("generation"), int) else 0
            generation = last + 1
        now = self.clock.mono()
        rec = RunRecord(name=self.opts.name, run_id=self.lease.run_id if self.lease else new_run_id(),
                        status=Status.STARTING.value, generation=generation, started_at=now, lease_s=self.opts.lease_s,
                        command=list(self.opts.command), options=self.opts.to_json())
        self.st = self.journal.st = policy.RunState(rec, phase=Phase.LAUNCH, stopped_by=self.stopped_by,
                                                    host=self.host)
        self.observer.follow_new(rec.run_id)
        self.write_state()
        self.journal.start_alerts(self.observer.output_tail)
        self.emit(Event.RUN_START, command=list(self.opts.command), supervisor_pid=os.getpid())

    def _setup_watches(self) -> None:
        if self.use_inotify:
            self._watch_at = self.clock.mono() + INOTIFY_AFTER_S

    def _make_watch(self, now: float) -> None:
        if self._watch_at is not None and now >= self._watch_at:
            self._watch_at = None
            self.inotify = self.observer.open_inotify(self.opts.verbose)
            self._look_at_all = True  # a change between the last look and the watch is not in its queue

    # --- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> int:
        # what start-up made lives as long as the supervisor: out of the collector's way for good, and the
        # collector back on (entry.run_command turns it off for the start)
        gc.freeze()
        gc.enable()
        st = self.st
        turns = 0
        while not (st.phase is Phase.CLOSING and self.journal.alerts_closed(self.clock.mono())
                   and (self.lease is None or not self.lease.busy())):
            now = self.clock.mono()
            self._make_watch(now)
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
        fds.extend((fd, select.POLLIN) for fd in self.attempt.fds())
        fds.extend((fd, select.POLLOUT) for fd in self.passthrough.poll_fds())
        if self.journal.alert_fd() is not None:
            fds.append((self.journal.alert_fd(), select.POLLIN))
        if self.lease is not None and self.lease.fd() is not None:
            fds.append((self.lease.fd(), select.POLLIN))
        return fds

    def _timeout(self, now: float) -> float | None:
        check = self.attempt.check
        if self.observer.more_output or self.catch_up or (self.attempt.recheck and self.attempt.handle is not None) \
                or (check is not None and check.done) or self._look_at_all:
            return 0.0  # (a new inotify watch: what changed before it existed is in no queue, so look now)
        at = [policy.wake_at(self.st, self.opts, now), self.journal.close_deadline()]
        if self.status_line is not None:
            at.append(self.next_status_at)
        handle, check = self.attempt.handle, self.attempt.check
        if self._watch_at is not None:
            at.append(now + EARLY_POLL_S)
        elif self.inotify is None or (handle is not None and handle.pidfd is None) or (check is not None and check.polled):
            at.append(now + POLL_FALLBACK_S)
        future = [a for a in at if a is not None]
        if not future:
            return None
        return max(0.0, min(future) - now) + 0.0005  # wake just after, not just before, the instant

    def _gather(self, ready: set[int], now: float) -> policy.Observations:
        obs = policy.Observations()
        if self.signals.fd in ready:
            self.signals.drain(self._own_pids() | self.attempt.keeper_pids())
        obs.signals = self.signals.new()
        changed = None
        if self.inotify is not None:
            changed = self.inotify.read() if self.inotify.fd in ready else set()
            if self._look_at_all:
                changed, self._look_at_all = None, False
        first, self.catch_up = self.catch_up, False
        recheck, self.attempt.recheck = self.attempt.recheck, False
        self.observer.pump(obs, UNBOUNDED if first else PUMP_BUDGET, now)
        self.observer.check_files(None if first else changed, obs)
        self.observer.check_answer(None if first else changed, obs, self.journal.wall_offset())
        self.attempt.observe(obs, self.st, ready, changed, now, first or recheck, self.observer)
        if self.incidents.sample is not None:  # asked for by policy (--activity)
            obs.activity, self.incidents.sample = self.incidents.sample, None
        elif self.attempt.handle is not None and self.st.phase is Phase.RUNNING:
            self.incidents.keep_baseline(self.attempt.handle, now, self.st.rec.attempt_started_at)
        if self.journal.alert_fd() in ready:
            self.journal.alerts_woke()
        if self.lease is not None and self.lease.fd() in ready:
            obs.lease_results = self.lease.results()
        self.journal.alert_news()
        self.passthrough.ready(ready)
        self.passthrough.catch_up(self.observer.follower.position)
        self.passthrough.check_lag(time.monotonic())
        return obs

    def _after(self, now: float) -> None:
        self.attempt.settle(self.st)
        if self.status_line is not None and self.st.phase is not Phase.CLOSING and now >= self.next_status_at:
            self.status_line.draw(self.journal.status_text(now), now)
            self.next_status_at = now + STATUS_LINE_EVERY_S

    # --- actions (policy.Action kinds) -------------------------------------------------------------
    def _act(self, action: policy.Action) -> None:
        kind, args, attempt, now = action.kind, action.args, self.attempt, self.clock.mono()
        if kind == "emit":
            self.emit(args["event"], **args["fields"])
        elif kind == "say":
            self.say(args["text"])
        elif kind == "write_state":
            self.write_state()
            attempt.recheck = attempt.handle is not None  # a safety net for a change inotify did not report
        elif kind == "launch":
            attempt.launch(self.st, self.opts, self.observer, str(self.state_dir.root), self.signals.ignored,
                           self.my_start, (self.stdout_fd, self.stderr_fd), self.base_env, args["resume_from"])
        elif kind == "sweep":
            pids = attempt.sweep()
            if pids:
                self.emit(Event.KILL, signal="SIGKILL", pid=min(pids), reason=args["why"])
        elif kind == "start_probe":
            attempt.start_probe(self.st, self.opts, self.observer, self.base_env)
        elif kind == "start_check":
            attempt.start_check(self.st, self.opts, self.base_env, self.clock.wall(), **args)
        elif kind in ("request_stop", "force_kill", "signal_group", "kill_probe", "kill_check"):
            getattr(attempt, kind)(**args)
        elif kind == "release_keeper":
            attempt.release_keepers()
        elif kind == "stall":
            self.emit(Event.STALL, **self.incidents.stall(attempt.handle, self.st.rec, args["fields"],
                                                          args["figures"], self.observer, self.clock))
        elif kind == "sample_activity":
            self.incidents.take_sample(attempt.handle, now)
        elif kind == "dump":
            self.incidents.dump(attempt.handle, args["signal"], self.observer)
        elif kind == "add_dump":
            self.incidents.add_dump(self.observer)
        elif kind == "renew_lease":
            self.lease.renew(**args)
        elif kind == "release_lease":
            self.lease.release(**args)
        elif kind == "replay_quiet":
            self.journal.replay_quiet()
        elif kind == "fail":
            raise HbwrapError(args["message"])
        else:
            raise AssertionError(f"unknown action {kind!r}")
