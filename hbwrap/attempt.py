"""The processes of a run as its supervisor holds them: the attempt's keeper being watched, the previous keeper
standing by, the probe; what they show at one wake-up, and what policy's actions do to them."""
from __future__ import annotations

from hbwrap import policy
from hbwrap.launcher import attempt_markers, env_changes, keeper_spec, probe_env
from hbwrap.model import Phase


class AttemptProcesses:
    def __init__(self, launcher):
        self.launcher = launcher
        self.handle = None         # the attempt being watched (launcher.AttemptHandle, or a test's fake)
        self.standby = None        # the keeper of the last ended attempt, standing by until released
        self.probe = None
        self.probe_killed = False
        self.check = None          # the --restart-check running now (restartcheck.RestartCheck)
        self.recheck = False       # look at the keeper's record at the next wake-up, whatever inotify says

    def fds(self) -> list[int]:
        return [fd for source in (self.handle, self.probe, self.check) if source is not None for fd in source.fds()]

    def held(self):
        """The handle whose keeper the run record names."""
        return self.handle or self.standby

    def own_pids(self) -> set[int]:
        return {p.pid for p in (self.probe, self.check) if p is not None and p.pid is not None}

    def keeper_pids(self) -> set[int]:
        return {h.keeper_pid for h in (self.handle, self.standby) if h is not None}

    # --- observing -----------------------------------------------------------------------------------
    def observe(self, obs: policy.Observations, st: policy.RunState, ready: set[int], changed, now: float,
                look: bool, observer) -> None:
        """What the keeper (its handshake, its record, its death) and the probe show at this wake-up."""
        h = self.handle
        if h is not None and st.phase is Phase.STARTING:
            if h.handshake_fd in ready:
                obs.launched = h.handshake()
            elif st.launch_deadline is not None and now >= st.launch_deadline:
                obs.launched = h.abandon(f"no handshake within {policy.HANDSHAKE_TIMEOUT_S:.0f}s")
            # the attempt may end as fast as it started, the record's change seen here: look again next time
            self.recheck = obs.launched is not None
        elif h is not None and st.phase in (Phase.RUNNING, Phase.STOPPING):
            if look or h.pidfd is None or h.pidfd in ready or observer.keeper_changed(changed):
                self._keeper(obs, h, now, observer)
            if st.unkept:
                obs.group_gone = h.group_gone()
        probe = self.probe
        if probe is not None and (self.probe_killed or not probe.fds() or probe.pidfd in ready):
            code = -1 if self.probe_killed else probe.result()
            if code is not None:
                obs.probe_exit, self.probe, self.probe_killed = code, None, False
        if self.check is not None:
            obs.check_result = self.check.result(ready)
            if obs.check_result is not None:
                self.check = None

    @staticmethod
    def _keeper(obs: policy.Observations, h, now: float, observer) -> None:
        record = h.ended_record()
        if record is None and not h.keeper_alive():
            h.close_pidfd()
            record = h.ended_record()  # written just before the keeper died
            if record is None:
                observer.drain(obs, now)
                obs.keeper_gone, obs.command_alive = True, h.command_alive()
        if record is not None:
            observer.drain(obs, now)
            obs.ended = record

    def settle(self, st: policy.RunState) -> None:
        """After the actions: an ended attempt's keeper stands by; once the next one is up, it may go."""
        if self.handle is not None and st.phase not in (Phase.STARTING, Phase.RUNNING, Phase.STOPPING):
            if self.standby is not None and self.standby is not self.handle:
                self.standby.release()
                self.standby.close()
            self.handle.close_pidfd()
            self.standby, self.handle = self.handle, None
        elif st.phase is Phase.RUNNING and self.standby is not None:
            self.standby.release()
            self.standby.close()
            self.standby = None

    # --- acting --------------------------------------------------------------------------------------
    def launch(self, st: policy.RunState, opts, observer, state_dir: str, ignored: list[int], my_start,
               hold_fds, base_env, resume_from: str | None) -> None:
        rec = st.rec
        observer.set_baseline(observer.baseline())  # before the command can change the files
        observer.mark_attempt_start()
        changes = env_changes(opts, rec, resume_from, observer.checkpoint_path, observer.heartbeat_path, base_env)
        spec = keeper_spec(opts, rec, changes, state_dir, ignored, my_start)
        markers = attempt_markers(rec, observer.heartbeat_path)
        self.handle = self.launcher.launch(opts, rec, spec, markers, hold_fds if opts.self_heal else None)

    def request_stop(self) -> None:
        self.handle.request_stop()

    def force_kill(self, why: str, signal: int | None = None) -> None:
        self.handle.force_kill()

    def signal_group(self, signal: int, why: str | None = None) -> None:
        self.handle.signal_group(signal)

    def sweep(self) -> list[int]:
        handle = self.held()
        return handle.sweep() if handle is not None else []

    def start_probe(self, st: policy.RunState, opts, observer, base_env) -> None:
        env = probe_env(opts, st.rec, base_env, observer.checkpoint_path, observer.heartbeat_path)
        self.probe = self.launcher.start_probe(opts.probe, env, opts.cwd)
        if self.probe is None:
            st.probe_started_at = None
            st.probe_failures += 1
            st.probe_detail = "it could not be started"

    def kill_probe(self) -> None:
        if self.probe is not None:
            self.probe.kill()
        if self.check is not None:
            self.check.close()
            self.probe_killed = True

    def start_check(self, st: policy.RunState, opts, base_env, now_wall: float, resume_from: str | None,
                    reason: str | None, exit_code: int | None) -> None:
        from hbwrap.restartcheck import check_environment, secrets_of

        rec = st.rec
        env = check_environment(base_env, opts, rec, now_wall, resume_from, reason, exit_code)
        self.check = self.launcher.start_check(opts.restart_check, env, opts.cwd, secrets_of(opts))
        rec.check_pid, rec.check_start = self.check.pid, self.check.start_time  # a takeover kills what is left

    def kill_check(self) -> None:
        if self.check is not None:
            self.check.kill()

    def release_keepers(self) -> None:
        for handle in (self.handle, self.standby):
            if handle is not None:
                handle.release()

    def close(self, wait_s: float) -> None:
        for handle in (self.handle, self.standby):
            if handle is not None:
                handle.wait_released(wait_s)  # so that a released keeper holds none of our pipes when we exit
                handle.close()
        if self.probe is not None:
            self.probe.kill()
