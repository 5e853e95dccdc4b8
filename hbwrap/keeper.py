"""The per-attempt keeper: parent of the command, writer of its output log and exit status, sweeper of its tree,
and the second layer of supervision: it replaces its supervisor when that dies or hangs (self-heal).

Started by the supervisor (launcher.KEEPER_BOOT: `python -I -S -c ... hbwrap.keeper PATHS JOB_DIR 3 4 [5 6]`,
the handshake pipe, the spec's memfd and hbwrap's own stdout and stderr) in a session of its own, so `kill -9` of the supervisor leaves the command, its output capture and its exit
status intact. It is a child subreaper: whatever escapes the command's process group (setsid, double
fork) is reparented here and is stopped with the rest. SIGTERM asks it to stop the attempt: kill signal to
the group and every descendant, `grace_s`, then SIGKILL to all of them until none is left. It writes
`keeper.json` (pids, start times, exit status) and, once no process of the attempt remains, `ended_at`.

With self-heal on, it then stands by until its supervisor releases it (SIGUSR1) — between attempts
something of the run must still be there — and all along it watches the supervisor: a pidfd tells it of
a death, the lease in state.json of a hang. Either way it starts `hbwrap watch NAME` (at most 3 per run,
counted in state.json), handing it the original stdout/stderr it holds for that purpose; after a death
it first waits HEAL_DELAY_S, so that a takeover already on its way (cron, an operator) goes first. Replacements
are its children, so they and their subtrees are never swept as part of the attempt.

A full disk (ENOSPC, EDQUOT, EROFS, any failed write) never stops it, nor the command: it keeps draining
the command's pipes; output the log refuses goes to the supervisor over the handshake pipe, kept open as
a channel (channel.py), in its place in the stream (the log's index records the gap: output.py); a
keeper.json the disk refuses keeps its last good version, the record goes over the channel instead, and
both are tried again every RETRY_S; the final record (ended_at) may use the space set aside for it
(jobstore.make_reserve). It reads its spec from a memfd, so a new attempt starts on a full disk too. A
keeper whose final record is not on disk yet stands by (even without self-heal) until it is, until its
supervisor releases it, or until a later attempt's keeper exists.

It is a small process (SPEC's promise of a keeper per running job): its interpreter starts without site,
and it imports only what it uses (os, select, signal, and the light modules jobfiles, jsonlite,
leasecheck, channel, output, spawn, procs): no json package, pathlib, subprocess, typer or dataclasses.
tests/test_lean_imports.py holds it to that.
"""
from __future__ import annotations

import errno
import marshal
import os
import select
import sys
import time

from hbwrap import jsonlite, procs
from hbwrap.channel import SPILL_STALL_S
from hbwrap.channelwriter import ChannelWriter
from hbwrap.jobfiles import (CURSOR_FILE, INDEX_FILE, KEEPER_FILE, LOG_FILE, STATE_FILE, make_reserve, open_job_file,
                             read_job_file, write_atomic)
from hbwrap.leasecheck import read_only, renewed_at
from hbwrap.logwriter import LogWriter
from hbwrap.procs import signal  # without signal.py's enums
from hbwrap.spawn import pty_peer, spawn, start_child

READ_SIZE = 1 << 20
CURSOR_STALE_S = 10.0
SWEEP_INTERVAL_S = 0.02
MAX_HEALS = 3              # replacements per run (SPEC §9)
HEAL_DELAY_S = 0.5         # after a supervisor's death, before starting a replacement
TAKEOVER_POLL_S = 0.1      # after starting a replacement: how often to look for it in state.json ...
TAKEOVER_WAIT_S = 10.0     # ... and for how long
ORPHAN_POLL_S = 1.0        # no live supervisor and no replacement allowed: look for one (cron, an operator)
MAX_WAIT_S = 3600.0
TERMINAL = frozenset({"succeeded", "failed", "escalated", "stopped"})
RETRY_S = 1.0              # a full disk: how often keeper.json and the log's gap record are tried again


class JobFiles:
    """The files of the job dir the keeper uses, as paths (jobstore.JobDir is the supervisor's view)."""

    def __init__(self, path: str):
        self.path = path
        self.state_file, self.keeper_file, self.cursor_file, self.log_file, self.index_file = (
            os.path.join(path, name) for name in (STATE_FILE, KEEPER_FILE, CURSOR_FILE, LOG_FILE, INDEX_FILE))


def read_record(path: str) -> dict:
    """A JSON record of the job dir (state.json, keeper.json); {} when it is missing or not a readable one."""
    try:
        doc = jsonlite.loads(read_job_file(path, 4 * 1024 * 1024))
    except Exception:  # OSError, ValueError, or errors.StateError for a planted file (errors.py pulls in enum)
        return {}
    return doc if isinstance(doc, dict) else {}


def _note(text: str) -> None:
    """A line in keeper.err (the keeper's stderr)."""
    try:
        os.write(2, f"hbwrap keeper: {text}\n".encode(errors="replace"))
    except OSError:
        pass


class SupervisorWatch:
    """Self-heal: follow the job's current supervisor; start a replacement when it dies or its lease expires."""

    def __init__(self, job: JobFiles, spec: dict, held_fds: tuple[int, int] | None, base_env: dict[str, str]):
        self.job, self.spec, self.held_fds, self.base_env = job, spec, held_fds, base_env
        self.heal = bool(spec.get("self_heal"))
        self.shared = bool(spec.get("shared_lease"))  # --lease-url: enforce the row's validity if need be
        self.enabled = self.heal or self.shared
        self.lease_verdict: str | None = None         # "stop", then "kill": the shared lease is running out
        self.pid: int | None = spec.get("supervisor_pid")
        self.start: int | None = spec.get("supervisor_start")
        self.pidfd: int | None = None
        lease_s = float(spec.get("lease_s") or 30.0)
        # a shared lease may have to be enforced from lease - margin on: look at it early enough
        self.check_at = time.monotonic() + (lease_s / 3 if spec.get("shared_lease") else lease_s)
        self.replacements: list[tuple[int, int | None]] = []
        self.spawned_at: float | None = None
        self.spawned = 0
        self.run_over = False
        self.limit_said = False
        if self.enabled:
            self._follow(self.pid, self.start)
            if not procs.is_same_process(self.pid, self.start):
                # the supervisor died before this keeper was up (an early crash): no pidfd will say so
                self.check_at = time.monotonic() + HEAL_DELAY_S

    def _follow(self, pid, start) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.pid, self.start = pid, start
        if procs.is_same_process(pid, start):
            self.pidfd = procs.pidfd_open(pid)

    def fds(self) -> list[int]:
        return [self.pidfd] if self.enabled and self.pidfd is not None and not self.run_over else []

    def timeout_at(self) -> float | None:
        return self.check_at if self.enabled and not self.run_over else None

    def check(self, now: float) -> None:
        """Look at the supervisor of record: follow a new one, replace a dead or hung one (self-heal), enforce
        a shared lease it no longer renews, notice the run's end."""
        if not self.enabled or self.run_over:
            return
        died = False
        if self.pidfd is not None and select.select([self.pidfd], [], [], 0)[0]:
            os.close(self.pidfd)  # readable for good: stop polling it
            self.pidfd, died = None, True
        if died:
            # a takeover already on its way (the next cron tick, an operator's watch) goes first
            self.check_at = min(self.check_at, now + HEAL_DELAY_S) if self.check_at > now else now + HEAL_DELAY_S
            return
        if now < self.check_at:
            return
        state = read_record(self.job.state_file)
        if state.get("run_id") != self.spec["run_id"] or state.get("status") in TERMINAL:
            self.run_over = True
            return
        lease_s = state.get("lease_s") if isinstance(state.get("lease_s"), (int, float)) else 30.0
        renewed = renewed_at(state, self.job) or 0.0  # a touch of state.json renews too (a full disk)
        nexts = [self._supervisor(state, lease_s, renewed, now)]
        if self.shared:
            nexts.append(self._judge_shared_lease(state.get("lease_valid_until"), lease_s, now))
        self.check_at = min(t for t in nexts if t is not None)

    def _supervisor(self, state: dict, lease_s: float, renewed: float, now: float) -> float:
        """Follow, or replace, the supervisor of record; when to look again."""
        pid, start = state.get("supervisor_pid"), state.get("supervisor_start")
        alive = isinstance(pid, int) and procs.is_supervisor(pid, start)
        if alive and (pid, start) != (self.pid, self.start):
            self._follow(pid, start)  # a takeover happened: watch the new supervisor
            self.spawned_at = None
        hung = alive and time.time() - renewed > lease_s and not read_only(self.job)
        if alive and not hung:
            return now + max(0.05, renewed + lease_s - time.time()) + 0.05
        if not self.heal:
            return now + ORPHAN_POLL_S  # a cron tick or an operator may bring a supervisor: follow it then
        if self.spawned_at is not None and now < self.spawned_at + TAKEOVER_WAIT_S and self._replacement_alive():
            return now + TAKEOVER_POLL_S  # the replacement is starting up
        heals = state.get("heals") if isinstance(state.get("heals"), int) else 0
        if heals >= MAX_HEALS or self.spawned >= MAX_HEALS:
            if not self.limit_said:
                self.limit_said = True
                _note(f"supervisor gone and {MAX_HEALS} replacements used: leaving the job orphaned "
                      f"(hbwrap watch {self.spec['name']} takes it over)")
            return now + ORPHAN_POLL_S
        return self._spawn(now)

    def _judge_shared_lease(self, valid_until, lease_s: float, now: float) -> float | None:
        """--lease-url: the supervisor records how long the row is known valid; if that time runs out without
        a renewal (a hung supervisor), the keeper stops the command itself — before the row expires."""
        if not isinstance(valid_until, (int, float)) or isinstance(valid_until, bool):
            return None
        from hbwrap.lease_rules import lease_clock, must_kill_at, must_stop_at

        boot = lease_clock()
        stop_at, kill_at = must_stop_at(valid_until, lease_s), must_kill_at(valid_until, lease_s)
        if boot >= kill_at:
            self.lease_verdict = "kill"
            return None
        if boot >= stop_at:
            self.lease_verdict = "stop"
            return now + (kill_at - boot) + 0.005
        return now + (stop_at - boot) + 0.005  # a renewal (a new valid_until in state.json) pushes it on

    def _replacement_alive(self) -> bool:
        return any(procs.is_same_process(pid, start) for pid, start in self.replacements)

    def _spawn(self, now: float) -> float:
        argv = [sys.executable, "-m", "hbwrap", "watch", self.spec["name"], "--state-dir", self.spec["state_dir"],
                "--by", "keeper"]
        out, err = self.held_fds if self.held_fds else (None, None)
        devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC) if out is None else None
        try:
            pid = start_child(argv, self.base_env, cwd="/", stdout=out if devnull is None else devnull,
                              stderr=err if devnull is None else devnull, new_session=True)
        except OSError as exc:
            _note(f"cannot start a replacement supervisor: {exc.strerror or exc}")
            return now + ORPHAN_POLL_S
        finally:
            if devnull is not None:
                os.close(devnull)
        self.replacements.append((pid, procs.start_time(pid)))  # reaped by the keeper's own waitpid(-1)
        self.spawned += 1
        self.spawned_at = now
        return now + TAKEOVER_POLL_S

    def excluded(self) -> set[int]:
        return {pid for pid, _ in self.replacements}


class Keeper:
    def __init__(self, job: JobFiles, spec: dict, handshake_fd: int, held_fds: tuple[int, int] | None):
        self.job, self.spec = job, spec
        self.channel = ChannelWriter(handshake_fd)  # the handshake, then what the disk refuses (channel.py)
        self.writer: LogWriter | None = None
        self.unsaved = False       # keeper.json is behind self.record (the disk refused it)
        self.record_sent: dict | None = None  # the record last sent over the channel instead
        self.retry_at: float | None = None
        self.said: set[str] = set()
        self.reading = True        # the command's output descriptors are polled (not held back)
        self.channel_polled: int | None = None
        self.standing_by = False
        self.base_env = procs.original_environ()
        self.record: dict = {
            "schema": spec["schema"], "run_id": spec["run_id"], "attempt": spec["attempt"],
            "keeper_pid": os.getpid(), "keeper_start": procs.start_time(os.getpid()),
            "started_at": time.time(), "child_pid": None, "child_start": None, "pgid": None,
            "exit_code": None, "exit_signal": None, "exec_error": None, "exited_at": None,
            "stop_requested_at": None, "sigkill_at": None, "ended_at": None, "replacements": [],
        }
        self.stop_requested = False
        self.released = False
        self.child_pid: int | None = None
        self.child_status: int | None = None
        self.stopping_since: float | None = None
        self.sigkill_sent = False
        self.streams: dict[int, str] = {}
        self.parked: list[int] = []  # pty masters after EIO: closed only once the command has exited
        self.pty_peer: int | None = None  # the pty's slave side, held while the command runs (spawn.pty_peer)
        self.watch = SupervisorWatch(job, spec, held_fds, self.base_env)
        self.held_fds = held_fds

    # --- start -----------------------------------------------------------------------------------
    def _on_term(self, signum, frame) -> None:
        self.stop_requested = True

    def _on_release(self, signum, frame) -> None:
        self.released = True

    def _reader_caught_up(self, generation: int) -> bool:
        """May the log rotate now? Rotating deletes generation-1: only once the supervisor has reached it.

        The supervisor's read position is in the job's `cursor` file. With no supervisor reading this run
        (another run id, or a cursor untouched for CURSOR_STALE_S: dead or hung), rotation goes ahead.
        """
        try:
            fd = open_job_file(self.job.cursor_file, os.O_RDONLY)
            try:
                st, parts = os.fstat(fd), os.read(fd, 4096).split()
            finally:
                os.close(fd)
            run_id, reader_gen = parts[0].decode(), int(parts[3] if len(parts) > 3 else parts[1])
        except Exception:  # unreadable, planted (StateError), or not a cursor: no reader to wait for
            return True
        if run_id != self.spec["run_id"] or time.time() - st.st_mtime > CURSOR_STALE_S:
            return True
        return reader_gen >= generation - 1  # rotating deletes generation - 1

    def _save(self) -> None:
        """keeper.json, and the record over the channel; when the disk refuses the file, its last good version
        stays and it is tried again every RETRY_S."""
        self.record["replacements"] = [list(r) for r in self.watch.replacements]
        if self.writer is not None:
            self.record["log_missing"] = self.writer.missing  # bytes of output the log could not take
            self.record["output_unsent"] = self.channel.dropped  # ... nor the supervisor get over the channel
        try:
            # that the attempt ended, and how, is its last word: the space set aside for it takes that
            write_atomic(self.job.keeper_file, (jsonlite.dumps(self.record) + "\n").encode(), fsync=False,
                         reserve=bool(self.record["ended_at"]))
        except OSError as exc:
            self._cannot_write(str(self.job.keeper_file), exc)
            self.unsaved = True
            self._retry_soon()
        else:
            self.unsaved = False
        # and over the channel, whose descriptor the supervisor polls: it hears of an exit at once, also
        # before its inotify watch exists (a run's first half second) and when the disk refused the file
        if self.record != self.record_sent:  # (retries of the same record are not news)
            self.channel.record(self.record)
            self.record_sent = jsonlite.loads(jsonlite.dumps(self.record))

    def _cannot_write(self, path: str, exc: OSError) -> None:
        """Said once per file: in keeper.err if it can be, and to the supervisor, who says it on hbwrap's stderr."""
        if path in self.said:
            return
        self.said.add(path)
        _note(f"cannot write {path}: {exc.strerror or exc}; carrying on")
        self.channel.warning(path, exc.errno or errno.EIO)

    def _retry_soon(self) -> None:
        if self.retry_at is None:
            self.retry_at = time.monotonic() + RETRY_S

    def _retry(self, now: float) -> None:
        """The disk refused something: try again (space may have come back while the command was silent)."""
        if self.retry_at is None or now < self.retry_at:
            return
        self.retry_at = None
        if self.writer is not None and self.writer.gap and not self.writer.settle():
            self._retry_soon()
        if self.unsaved:
            if self.standing_by and self._newer_keeper():
                self.unsaved = False  # a later attempt's keeper writes keeper.json now: ours would clobber it
            else:
                self._save()

    def _newer_keeper(self) -> bool:
        mine = self.record["keeper_start"] or 0
        keepers = procs.find_by_argv(b"hbwrap.keeper", os.fsencode(self.job.path))
        return any((procs.start_time(pid) or 0) > mine for pid in keepers if pid != os.getpid())

    # --- run -------------------------------------------------------------------------------------
    def run(self) -> int:
        procs.set_child_subreaper()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_release)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        make_reserve(self.job.keeper_file)
        self.writer = writer = LogWriter(self.job.log_file, self.job.index_file, int(self.spec["log_max_size"]),
                                         may_rotate=self._reader_caught_up)
        try:
            self.child_pid, self.streams, self._pty_keepalive = spawn(self.spec, self.base_env)
        except OSError as exc:
            code = 127 if exc.errno == errno.ENOENT else 126
            self.record.update(exec_error=code, exec_message=exc.strerror or str(exc), ended_at=time.time())
            self._save()
            self.channel.line(f"exec {code} {exc.strerror or exc}\n", keep_open=False)
            writer.close()
            self._reap_all()
            return 0
        if self.spec.get("pty"):
            self.pty_peer = pty_peer(next(iter(self.streams)))
        self.record.update(child_pid=self.child_pid, child_start=procs.start_time(self.child_pid),
                           pgid=self.child_pid)
        self._save()
        self.channel.line(f"ok {self.child_pid} {self.record['child_start']}\n", keep_open=True)
        self._attempt(wake_r, writer)
        writer.close()
        self._log_trouble()
        # what the disk refused reaches the supervisor before the record saying that the attempt has ended
        self.channel.flush_for(SPILL_STALL_S)
        self.record["ended_at"] = time.time()
        self._save()
        self.channel.flush_for(SPILL_STALL_S)
        if self.watch.enabled or self.unsaved:
            self._stand_by(wake_r)
        self.channel.close()
        return 0

    def _attempt(self, wake_r: int, writer: LogWriter) -> None:
        """Hold the command until no process of the attempt is left, with every byte of output in the log."""
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        for fd in self.streams:
            os.set_blocking(fd, False)
            poller.register(fd, select.POLLIN)
        watched: set[int] = set()
        children_left = True
        while True:
            watched = self._rewatch(poller, watched)
            self._sync_poll(poller)
            at = [self.watch.timeout_at(), self.retry_at, self.channel.release_at()]
            if self.stopping_since is not None:
                at.append(time.monotonic() + SWEEP_INTERVAL_S if self.sigkill_sent
                          else self.stopping_since + float(self.spec["grace_s"]))
            if not children_left:
                if not self.streams:
                    break
                at.append(time.monotonic())
            ready = self._poll(poller, at)
            for fd, _ in ready:
                if fd == wake_r:
                    _drain(wake_r)
                elif fd == self.channel_polled:
                    self.channel.flush()
                elif fd in self.streams:
                    self._pump(fd, writer, poller)
            self._retry(time.monotonic())
            if not children_left and not any(fd in self.streams for fd, _ in ready):
                # no process of the attempt is left, so nothing can still write: what is unread is the end
                for fd in list(self.streams):
                    self._pump(fd, writer, poller, drain=True)
                break
            self.watch.check(time.monotonic())
            if self.watch.lease_verdict is not None and self.child_status is None:
                self._lease_running_out()
            if self.stop_requested and self.stopping_since is None:
                self.record["stop_requested_at"] = time.time()
                self._begin_stop()
            children_left = self._reap_all()
            if children_left and self.child_status is not None and self.stopping_since is None:
                self._begin_stop()  # the command ended but left processes behind: sweep them
            if children_left and self.stopping_since is not None:
                if time.monotonic() >= self.stopping_since + float(self.spec["grace_s"]):
                    if not self.sigkill_sent:
                        self.sigkill_sent = True
                        self.record["sigkill_at"] = time.time()
                        self._save()
                    self._signal_all(signal.SIGKILL)
        self._release_pty()

    def _release_pty(self) -> None:
        """The command has exited: let its pty go once its last other holder (a descendant) closes it."""
        for fd in self.parked + ([self.pty_peer] if self.pty_peer is not None else []):
            os.close(fd)
        self.parked, self.pty_peer = [], None

    def _sync_poll(self, poller) -> None:
        """Poll the command's output unless the channel holds back (channel.py), and the channel while it has
        frames to write."""
        reading = not self.channel.holding_back(time.monotonic())
        if reading != self.reading:
            for fd in self.streams:
                if reading:
                    poller.register(fd, select.POLLIN)
                else:
                    _unpoll(poller, fd)
            self.reading = reading
        polled = self.channel.fd if self.channel.pending else None
        if polled != self.channel_polled:
            if self.channel_polled is not None:
                _unpoll(poller, self.channel_polled)
            if polled is not None:
                poller.register(polled, select.POLLOUT)
            self.channel_polled = polled

    def _standing_by(self) -> bool:
        if self.released:
            return False
        if self.watch.enabled and not self.watch.run_over:
            return True
        return self.unsaved and not self.watch.run_over  # its end is not on disk yet: stay until it is, or released

    def _stand_by(self, wake_r: int) -> None:
        """Between attempts: stay until released, the run ends, or a newer keeper of the run exists."""
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        watched: set[int] = set()
        self.standing_by = True
        while self._standing_by():
            watched = self._rewatch(poller, watched)
            for fd, _ in self._poll(poller, [self.watch.timeout_at(), self.retry_at]):
                if fd == wake_r:
                    _drain(wake_r)
            self._reap_all()
            if self.released or self._superseded():
                break
            self._retry(time.monotonic())
            self.watch.check(time.monotonic())

    def _superseded(self) -> bool:
        return read_record(self.job.keeper_file).get("keeper_pid") not in (None, os.getpid())

    def _rewatch(self, poller, watched: set[int]) -> set[int]:
        now = set(self.watch.fds())
        for fd in watched - now:
            try:
                poller.unregister(fd)
            except KeyError:
                pass
        for fd in now - watched:
            poller.register(fd, select.POLLIN)
        return now

    def _poll(self, poller, at: list) -> list:
        due = [a for a in at if a is not None]
        # capped: poll() takes at most ~24.8 days, and a --grace may be longer; waking early is harmless
        timeout_ms = None if not due else min(max(0.0, min(due) - time.monotonic()), MAX_WAIT_S) * 1000
        try:
            return poller.poll(timeout_ms)
        except InterruptedError:
            return []

    def _pump(self, fd: int, writer: LogWriter, poller, drain: bool = False) -> None:
        stream = self.streams[fd]
        for _ in range(64 if not drain else 1 << 30):
            if self.channel.holding_back(time.monotonic()):
                if not drain:
                    return  # the command waits (its pipe fills) until the supervisor has taken some
                self.channel.flush_for(SPILL_STALL_S, until_room=True)
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the pty's last slave closed
                    raise
                data = b""
                if self.child_status is None:
                    # Closing the master now would hang up the terminal of a command that closed its
                    # output but still runs (SIGHUP, exit 129): keep it open until the command has exited.
                    _unpoll(poller, fd)
                    del self.streams[fd]
                    self.parked.append(fd)
                    return
            if not data:
                _unpoll(poller, fd)
                os.close(fd)
                del self.streams[fd]
                return
            lost = writer.write(stream, data)
            if lost:
                # the disk refused it: to the supervisor directly, in its place (the gap the log records)
                writer.unsent(self.channel.data(writer.position, stream, data[len(data) - lost:]))
                self._log_trouble()

    def _log_trouble(self) -> None:
        failure, self.writer.failure = self.writer.failure, None
        if failure is not None:
            self._cannot_write(str(self.job.log_file), failure)
        if self.writer.gap:
            self._retry_soon()

    def _reap_all(self) -> bool:
        """Reap every exited child; True while any process of the attempt (a child, or below one) is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            except InterruptedError:
                continue
            if pid == 0:
                break
            if pid == self.child_pid and self.child_status is None:
                self.child_status = status
                if os.WIFSIGNALED(status):
                    self.record["exit_signal"] = os.WTERMSIG(status)
                else:
                    self.record["exit_code"] = os.waitstatus_to_exitcode(status)
                self.record["exited_at"] = time.time()
                self._save()
                self._release_pty()
        spared = self.watch.excluded()
        if not spared:
            return True
        # zombies count: one that exited after the waitpid above is reaped at the next turn
        return bool(procs.children_of(os.getpid(), exclude=spared))

    def _lease_running_out(self) -> None:
        """The shared lease is running out and the supervisor renews it no more: stop (then kill) the command."""
        if self.stopping_since is None:
            _note("the shared lease is running out and the supervisor does not renew it: stopping the command")
            self.record["stop_requested_at"] = time.time()
            self._begin_stop()
        if self.watch.lease_verdict == "kill" and not self.sigkill_sent:
            self.sigkill_sent = True
            self.record["sigkill_at"] = time.time()
            self._save()
            self._signal_all(signal.SIGKILL)

    def _begin_stop(self) -> None:
        self.stopping_since = time.monotonic()
        self._signal_all(int(self.spec["kill_signal"]))

    def _signal_all(self, sig: int) -> None:
        if self.child_pid:
            procs.killpg_quietly(self.child_pid, sig)
        for pid in procs.descendants(os.getpid(), prune=self.watch.excluded()):
            procs.kill_quietly(pid, sig)


def _unpoll(poller, fd: int) -> None:
    try:
        poller.unregister(fd)
    except KeyError:
        pass  # not polled now (held back)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def read_spec(fd: int) -> dict:
    """The keeper's spec from the memfd the supervisor filled (memory, not the disk: a full disk cannot stop
    an attempt from starting); marshal, as the supervisor runs the same interpreter."""
    chunks = []
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            chunks.append(chunk)
    try:
        spec = marshal.loads(b"".join(chunks))
    except (EOFError, TypeError) as exc:
        raise ValueError(f"not a keeper spec ({exc})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), int):
        raise ValueError("not a keeper spec")
    return spec


def main(argv: list[str]) -> None:
    """argv: JOB_DIR HANDSHAKE_FD SPEC_FD [STDOUT_FD STDERR_FD]; exits (flushing nothing: it prints nothing)."""
    job_path, handshake_fd, spec_fd = argv[0], int(argv[1]), int(argv[2])
    held = (int(argv[3]), int(argv[4])) if len(argv) >= 5 else None
    for fd in (handshake_fd, spec_fd, *(held or ())):
        os.set_inheritable(fd, False)  # handed over as 3, 4, ...: no child of ours may hold them
    try:
        spec = read_spec(spec_fd)
    except (OSError, ValueError) as exc:
        _note(f"cannot read its spec: {exc}")
        os._exit(125)
    os._exit(Keeper(JobFiles(job_path), spec, handshake_fd, held).run())
