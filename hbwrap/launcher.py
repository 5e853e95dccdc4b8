"""Starting an attempt: the command's environment, the keeper process and its handshake, probes, and handles
through which the supervisor observes and signals an attempt's processes (only ever after verifying them).

The handshake pipe stays open after the keeper's line: it is the keeper's channel (channel.py), which
carries what a full disk refused (output, the keeper's record); the handle holds its reading end."""
from __future__ import annotations

import errno
import marshal
import os
import select
import signal
import sys
import time

import hbwrap
from hbwrap import jsonlite, procs
from hbwrap.channelreader import ChannelReader
from hbwrap.errors import HbwrapError, StateError
from hbwrap.jobstore import JobDir, open_job_file, read_job_file, write_atomic
from hbwrap.model import SCHEMA_VERSION, RunRecord
from hbwrap.options import RunOptions
from hbwrap.spawn import Child, start_keeper

# The keeper starts as `python -I -S -c KEEPER_BOOT hbwrap.keeper PATHS JOB_DIR 3 4 [5 6]`: no site
# (its .pth files and imports are ~10-25 ms and 1-2 MB a keeper does without), no user environment; PATHS
# is where hbwrap (and, for --pty, ptyprocess) are found. "hbwrap.keeper" and JOB_DIR in its command line
# are how procs.is_keeper knows it.
KEEPER_BOOT = "import sys; sys.path[0:0] = sys.argv[2].split(':'); from hbwrap.keeper import main; main(sys.argv[3:])"
HBWRAP_VARS = ("HBWRAP_JOB", "HBWRAP_RUN_ID", "HBWRAP_ATTEMPT", "HBWRAP_CHECKPOINT_FILE", "HBWRAP_HEARTBEAT_FILE",
               "HBWRAP_RESUME_FROM", "HBWRAP_FENCE")


def env_changes(opts: RunOptions, rec: RunRecord, resume: str | None, checkpoint_path: str, heartbeat_path: str,
                base: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(set, unset): what the command's environment adds to, and removes from, hbwrap's own (SPEC §6).

    Nothing else differs from the environment hbwrap was started with: not even what Python adds at
    start-up (its locale coercion's LC_CTYPE), which is why `base` is read from /proc/self/environ.
    """
    env = {"HBWRAP_JOB": opts.name, "HBWRAP_RUN_ID": rec.run_id, "HBWRAP_ATTEMPT": str(rec.attempt),
           "HBWRAP_CHECKPOINT_FILE": str(checkpoint_path), "HBWRAP_HEARTBEAT_FILE": str(heartbeat_path),
           "HBWRAP_FENCE": str(rec.generation)}
    unset = []
    if resume is not None:
        env["HBWRAP_RESUME_FROM"] = resume
    elif "HBWRAP_RESUME_FROM" in base:
        unset.append("HBWRAP_RESUME_FROM")
    if "HBWRAP_LEASE_URL" in base:
        unset.append("HBWRAP_LEASE_URL")  # its credentials are hbwrap's, never the command's
    if "PYTHONUNBUFFERED" not in base:
        env["PYTHONUNBUFFERED"] = "1"
    if opts.pty:
        env["PAGER"] = "cat"
        if "TERM" not in base:
            env["TERM"] = "xterm"
        env["COLUMNS"], env["LINES"] = "500", "50"
    return env, unset


def apply_env(base: dict[str, str], changes: tuple[dict[str, str], list[str]]) -> dict[str, str]:
    env = dict(base)
    env.update(changes[0])
    for key in changes[1]:
        env.pop(key, None)
    return env


def keeper_spec(opts: RunOptions, rec: RunRecord, changes: tuple[dict[str, str], list[str]], state_dir: str,
                ignored_signals: list[int], supervisor_start: int | None) -> dict:
    """What the keeper of attempt `rec.attempt` needs to know (keeper-spec.json; no secrets beyond the command)."""
    return {"run_id": rec.run_id, "attempt": rec.attempt, "name": opts.name, "state_dir": state_dir,
            "command": list(opts.command), "cwd": opts.cwd, "pty": opts.pty, "kill_signal": opts.kill_signal,
            "grace_s": opts.grace_s, "log_max_size": opts.log_max_size, "ignored_signals": ignored_signals,
            "stdin_inherit": os.isatty(0), "env_set": changes[0], "env_unset": changes[1],
            "self_heal": opts.self_heal, "supervisor_pid": os.getpid(), "supervisor_start": supervisor_start,
            "lease_s": opts.lease_s, "shared_lease": bool(opts.lease_url)}


def probe_env(opts: RunOptions, rec: RunRecord, base: dict[str, str], checkpoint_path: str,
              heartbeat_path: str) -> dict[str, str]:
    """A probe gets the command's environment plus HBWRAP_CHILD_PID."""
    env = apply_env(base, env_changes(opts, rec, None, checkpoint_path, heartbeat_path, base))
    env["HBWRAP_CHILD_PID"] = str(rec.child_pid)
    return env


def attempt_markers(rec: RunRecord, heartbeat_path: str) -> dict[str, str]:
    """Environment entries unique to one attempt: how its processes are found once their keeper is gone."""
    return {"HBWRAP_RUN_ID": rec.run_id, "HBWRAP_ATTEMPT": str(rec.attempt), "HBWRAP_HEARTBEAT_FILE": str(heartbeat_path)}


class AttemptHandle:
    """The supervisor's side of one attempt: its keeper (started by us, or adopted) and the command it holds.

    Every signal goes to a process only after its identity is verified against the recorded start time
    (and, for the keeper, its command line; for the command, the run id in its environment).
    """

    def __init__(self, job: JobDir, rec: RunRecord, markers: dict[str, str], keeper_pid: int,
                 keeper_start: int | None, child: Child | None = None, handshake_fd: int | None = None,
                 exclude=frozenset()):
        self.job, self.run_id, self.attempt = job, rec.run_id, rec.attempt
        self.markers = markers
        self.keeper_pid, self.keeper_start = keeper_pid, keeper_start
        self.own_keeper = child  # a keeper we started ourselves (we reap it), None for an adopted one
        # the handshake pipe: the keeper's line, then what the disk refused to take (channel.py)
        self.channel = ChannelReader(handshake_fd) if handshake_fd is not None else None
        self.unsent = 0  # output the disk refused that the keeper could not hand to any supervisor (its record)
        self.child_pid: int | None = None
        self.child_start: int | None = None
        self.pidfd = procs.pidfd_open(keeper_pid)
        self.group_pidfd: int | None = None
        self.exclude = exclude  # callable -> set of our own pids (probes, alert commands): never swept
        self._released = False
        self._group_verified = False

    @classmethod
    def adopt(cls, job: JobDir, rec: RunRecord, markers: dict[str, str], keeper: dict, exclude) -> "AttemptHandle":
        handle = cls(job, rec, markers, keeper.get("keeper_pid"), keeper.get("keeper_start"), exclude=exclude)
        handle.child_pid, handle.child_start = keeper.get("child_pid"), keeper.get("child_start")
        return handle

    # --- observing ------------------------------------------------------------------------------
    @property
    def handshake_fd(self) -> int | None:
        """The keeper's pipe while it is open (the handshake, then the channel): polled for news."""
        return self.channel.fd if self.channel is not None else None

    def fds(self) -> list[int]:
        return [fd for fd in (self.handshake_fd, self.pidfd, self.group_pidfd) if fd is not None]

    def handshake(self) -> tuple | None:
        """("ok", pid, start) | ("exec", code, message) | ("lost", started, text) once the keeper reported."""
        if self.channel is None or self.channel.line_read:
            return None
        line = self.channel.read_line()
        if line is None:
            return None
        parts = line.decode(errors="replace").strip().split(" ", 2)
        if parts[0] == "exec" and len(parts) >= 2 and parts[1].isdigit():
            self.close_channel()
            self.reap()
            return "exec", int(parts[1]), parts[2].strip() if len(parts) > 2 else ""
        if parts[0] == "ok" and len(parts) == 3 and parts[1].isdigit():
            self.child_pid = int(parts[1])
            self.child_start = int(parts[2]) if parts[2].strip().isdigit() else None
            return "ok", self.child_pid, self.child_start
        return self.abandon("the keeper exited without reporting")

    def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def abandon(self, why: str) -> tuple:
        """The keeper died or hung before its handshake: kill it and whatever it had started."""
        self.close_channel()
        if self.own_keeper is not None:
            self.own_keeper.kill()
            self.own_keeper.wait()
        started = bool(self.sweep())
        try:
            tail = read_job_file(self.job.keeper_err_file)[-400:].decode(errors="replace").strip()
        except (OSError, StateError):
            tail = ""
        return "lost", started, tail.splitlines()[-1] if tail else why

    def ended_record(self) -> dict | None:
        """The keeper's record once it says every process of this attempt is gone: keeper.json, or the record
        the keeper sent over its channel when the disk refused keeper.json."""
        try:
            record = self.job.read_keeper()
        except StateError:
            record = None
        for candidate in (record, self.channel.record if self.channel is not None else None):
            if (candidate and candidate.get("run_id") == self.run_id and candidate.get("attempt") == self.attempt
                    and candidate.get("keeper_pid") == self.keeper_pid and candidate.get("ended_at")):
                if isinstance(candidate.get("output_unsent"), int):
                    self.unsent = candidate["output_unsent"]  # for the observer to say, if not said yet
                return candidate
        return None

    def keeper_alive(self) -> bool:
        """Our keeper has not exited; an adopted one is alive only if it is verifiably a keeper of this job
        (a recycled pid or a forged record is as good as gone: it is never waited for nor signalled)."""
        if self.own_keeper is not None:
            return self.own_keeper.poll() is None
        return self.keeper_verified()

    def keeper_verified(self) -> bool:
        return procs.is_keeper(self.keeper_pid, self.keeper_start, str(self.job.path))

    def command_alive(self) -> bool:
        return procs.is_command(self.child_pid, self.child_start, self.run_id)

    def group_gone(self) -> bool:
        return not self.child_pid or not procs.group_members(self.child_pid)

    def _roots(self) -> list[int]:
        """The verified processes of this attempt the tree is read from: the keeper, the command's group."""
        roots = [self.keeper_pid] if self.keeper_verified() else []
        if self.command_alive():
            roots.append(self.child_pid)
        return roots

    def sample(self, now: float) -> dict | None:
        """The tree's CPU and I/O counters now (--activity, the incident's CPU baseline); None if unreadable."""
        from hbwrap.activity import sample_tree

        roots = self._roots()
        if not roots:
            return None
        return sample_tree(roots, keeper_pid=self.keeper_pid if self.keeper_pid in roots else None, now_mono=now)

    def snapshot(self, baseline: dict | None, now: float, wall: float, secrets) -> dict | None:
        """What the attempt's tree is doing now (the incident): processes, states, sockets, CPU shares."""
        from hbwrap.incident import snapshot

        roots = self._roots()
        if not roots:
            return None
        return snapshot(roots, cpu_baseline=baseline, now_mono=now, now_wall=wall, secrets=secrets,
                        keeper_pid=self.keeper_pid if self.keeper_pid in roots else None)

    # --- acting ---------------------------------------------------------------------------------
    def signal_command(self, sig: int) -> None:
        """A signal to the command's main process only (--dump-signal), once it is verified."""
        if self.command_alive():
            procs.kill_quietly(self.child_pid, sig)

    def request_stop(self) -> None:
        """Ask the keeper to stop the attempt (kill signal, grace, SIGKILL to all its descendants)."""
        if self.keeper_verified():
            procs.kill_quietly(self.keeper_pid, signal.SIGTERM)

    def force_kill(self) -> None:
        """Kill the attempt's whole tree now, ourselves (the keeper's tree is the attempt's, by ancestry; not
        the replacement supervisors the keeper started for self-heal, nor anything of ours)."""
        if self.keeper_verified():
            spared = {os.getpid(), *self._replacements()}
            for pid in procs.descendants(self.keeper_pid, prune=spared):
                procs.kill_quietly(pid, signal.SIGKILL)
        if self.command_alive():
            procs.killpg_quietly(self.child_pid, signal.SIGKILL)

    def _replacements(self) -> list[int]:
        try:
            record = self.job.read_keeper() or {}
        except StateError:
            return []
        return [pid for pid, start in record.get("replacements") or () if procs.is_same_process(pid, start)]

    def signal_group(self, sig: int) -> None:
        """Signal the command's group (its keeper is gone). The leader is verified first; while any member is
        left the kernel cannot give the group id to another process, so later signals reach the same group."""
        if not self.child_pid:
            return
        if not self._group_verified:
            if not self.command_alive():
                return
            self._group_verified = True
            self.group_pidfd = procs.pidfd_open(self.child_pid)
        if procs.group_members(self.child_pid):
            procs.killpg_quietly(self.child_pid, sig)

    def sweep(self) -> list[int]:
        """SIGKILL every process of this attempt found by its environment (escaped ones included)."""
        exclude = {os.getpid()} | set(self.exclude())
        pids = procs.find_by_environ(self.markers, exclude)
        for pid in pids:
            procs.kill_quietly(pid, signal.SIGKILL)
        return pids

    def release(self) -> None:
        """Tell the keeper the run no longer needs it (it stands by between attempts for self-heal)."""
        if not self._released and self.keeper_verified():
            procs.kill_quietly(self.keeper_pid, signal.SIGUSR1)
        self._released = True

    def close_pidfd(self) -> None:
        """The keeper is gone (or stands by): its pidfd is readable for good or no longer of interest."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def wait_released(self, timeout_s: float) -> None:
        """After release: wait (bounded) until the keeper has exited, so it holds none of hbwrap's pipes."""
        if not self._released:
            return
        end = time.monotonic() + timeout_s
        pidfd = procs.pidfd_open(self.keeper_pid) if self.own_keeper is not None else None
        try:
            while self.keeper_alive() and (left := end - time.monotonic()) > 0:
                if pidfd is not None:
                    select.select([pidfd], [], [], min(left, 0.05))  # readable once it has exited
                else:
                    time.sleep(0.005)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        if self.own_keeper is not None and self.own_keeper.poll() is not None:
            self.own_keeper.wait()

    def reap(self) -> None:
        if self.own_keeper is not None:
            self.own_keeper.wait()

    def close(self) -> None:
        self.close_channel()
        for name in ("pidfd", "group_pidfd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


class Launcher:
    """Starts keepers and probes as real processes (tests swap in a fake with the same methods)."""

    def __init__(self, job: JobDir, base_env: dict[str, str], exclude):
        self.job = job
        self.base_env = base_env
        self.exclude = exclude

    def launch(self, opts: RunOptions, rec: RunRecord, spec: dict, markers: dict[str, str],
               hold_fds: tuple[int, int] | None) -> AttemptHandle:
        """Start the keeper of attempt `rec.attempt`; its handshake arrives on the handle's handshake fd.

        Nothing here needs the disk: the spec goes to the keeper in a memfd (keeper-spec.json is only a
        copy for the curious, written if the disk takes it), and keeper.err falls back to /dev/null.
        """
        full = {"schema": SCHEMA_VERSION, **spec}
        try:
            write_atomic(self.job.keeper_spec_file, jsonlite.dumps(full).encode() + b"\n", fsync=False)
        except OSError:
            pass  # a full disk: the keeper reads its spec from the memfd
        try:
            os.unlink(self.job.keeper_file)
        except FileNotFoundError:
            pass
        spec_fd = _memfd(marshal.dumps(full))  # the same interpreter reads it: no json import in the keeper
        hs_r, hs_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(hs_r, False)
        try:
            err_fd = open_job_file(self.job.keeper_err_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except OSError:
            err_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)  # a full disk may refuse a new file
        # the keeper's fds 1 and 2 are its keeper.err; 3 the handshake, 4 the spec, 5 and 6 (self-heal)
        # hbwrap's own stdout and stderr, for a replacement supervisor to write to
        passed = [hs_w, spec_fd, *(hold_fds or ())]
        argv = [sys.executable, "-I", "-S", "-c", KEEPER_BOOT, "hbwrap.keeper", _keeper_paths(opts),
                str(self.job.path), *(str(3 + i) for i in range(len(passed)))]
        try:
            pid = start_keeper(argv, self.base_env, not spec.get("stdin_inherit"), err_fd, passed)
        except OSError as exc:
            os.close(hs_r)
            raise HbwrapError(f"cannot start the keeper process: {exc.strerror or exc}") from None
        finally:
            for fd in (hs_w, spec_fd, err_fd):
                os.close(fd)
        return AttemptHandle(self.job, rec, markers, pid, procs.start_time(pid), Child(pid), hs_r,
                             exclude=self.exclude)

    def adopt(self, rec: RunRecord, markers: dict[str, str], keeper: dict) -> AttemptHandle:
        """A handle on a keeper started by a previous supervisor of the run (its record in keeper.json)."""
        return AttemptHandle.adopt(self.job, rec, markers, keeper, self.exclude)

    def start_probe(self, command: str, env: dict[str, str], cwd: str) -> "Probe | None":
        import subprocess  # only with --probe

        try:
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True, env=env, cwd=cwd)
        except OSError:
            return None
        return Probe(proc)

    def start_check(self, command: str, env: dict[str, str], cwd: str, secrets: list[str]):
        """The --restart-check (a restartcheck.RestartCheck; one that could not start reports so)."""
        from hbwrap.restartcheck import RestartCheck

        return RestartCheck.start(command, env, cwd, secrets)


class Probe:
    """A running `--probe`: its exit is observed through a pidfd, never waited for."""

    def __init__(self, proc):
        self.proc = proc  # a subprocess.Popen
        self.pid = proc.pid
        self.pidfd = procs.pidfd_open(proc.pid)

    def fds(self) -> list[int]:
        return [self.pidfd] if self.pidfd is not None else []

    def result(self) -> int | None:
        code = self.proc.poll()
        if code is None:
            return None
        self.close()
        return code if code >= 0 else 128 - code

    def kill(self) -> int:
        procs.killpg_quietly(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.close()
        return -1

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _keeper_paths(opts: RunOptions) -> str:
    """Where the keeper's interpreter, started without site, finds hbwrap (and ptyprocess for --pty)."""
    paths = [os.path.dirname(os.path.dirname(os.path.abspath(hbwrap.__file__)))]
    if opts.pty:
        import ptyprocess

        paths.append(os.path.dirname(os.path.dirname(os.path.abspath(ptyprocess.__file__))))
    return ":".join(dict.fromkeys(paths))


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("hbwrap-keeper-spec", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def exec_error_code(exc: OSError) -> int:
    return 127 if exc.errno == errno.ENOENT else 126
