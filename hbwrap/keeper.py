"""The per-attempt keeper: parent of the command, writer of its output log and exit status, sweeper of its tree.

Started by the supervisor as `python -m hbwrap.keeper JOB_DIR HANDSHAKE_FD` in a session of its own, so
that `kill -9` of the supervisor leaves the command, its output capture and its exit status intact. It is
a child subreaper: whatever escapes the command's process group (setsid, double fork) is reparented here
and is stopped with the rest. SIGTERM asks it to stop the attempt: `kill_signal` to the group and every
descendant, `grace_s`, then SIGKILL to all of them until none is left. It writes `keeper.json` (pids,
start times, exit status) and exits once no process of the attempt remains.
"""
from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hbwrap import procs
from hbwrap.jobstore import JobDir, read_json, write_json_atomic
from hbwrap.model import SCHEMA_VERSION
from hbwrap.output import STDERR, STDOUT, LogWriter

PTY_ROWS, PTY_COLS = 50, 500
READ_SIZE = 1 << 20
CURSOR_STALE_S = 10.0
PIPE_SIZE = 1 << 20  # fewer context switches between the command and the keeper at high output rates
SWEEP_INTERVAL_S = 0.02


def _grow_pipe(fd: int) -> None:
    import fcntl

    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size for this user: the default size works too


class Keeper:
    def __init__(self, job: JobDir, spec: dict, handshake_fd: int):
        self.job, self.spec, self.handshake_fd = job, spec, handshake_fd
        self.record: dict = {
            "schema": SCHEMA_VERSION, "run_id": spec["run_id"], "attempt": spec["attempt"],
            "keeper_pid": os.getpid(), "keeper_start": procs.start_time(os.getpid()),
            "started_at": time.time(), "child_pid": None, "child_start": None, "pgid": None,
            "exit_code": None, "exit_signal": None, "exec_error": None, "exited_at": None,
            "stop_requested_at": None, "sigkill_at": None, "ended_at": None,
        }
        self.stop_requested = False
        self.child_pid: int | None = None
        self.child_status: int | None = None
        self.stopping_since: float | None = None
        self.sigkill_sent = False
        self.streams: dict[int, str] = {}

    # --- start -----------------------------------------------------------------------------------
    def _on_term(self, signum, frame) -> None:
        self.stop_requested = True

    def _preexec(self) -> None:
        procs.restore_default_signals(self.spec.get("ignored_signals", ()))

    def _spawn(self) -> None:
        command = self.spec["command"]
        if self.spec.get("pty"):
            self._spawn_pty(command)
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for fd in (out_r, err_r):
            _grow_pipe(fd)
        stdin = None if self.spec.get("stdin_inherit") else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(command, stdin=stdin, stdout=out_w, stderr=err_w, cwd=self.spec["cwd"],
                                    process_group=0, restore_signals=True, preexec_fn=self._preexec)
        finally:
            os.close(out_w)
            os.close(err_w)
        proc.returncode = 0  # we reap it ourselves; keep Popen from trying
        self.child_pid = proc.pid
        self.streams = {out_r: STDOUT, err_r: STDERR}

    def _spawn_pty(self, command: list[str]) -> None:
        from ptyprocess import PtyProcess

        exe = command[0]
        path = exe if "/" in exe else shutil.which(exe)
        if path is None:
            candidates = [os.path.join(d, exe) for d in os.environ.get("PATH", os.defpath).split(os.pathsep)]
            if any(os.path.exists(c) for c in candidates):
                raise PermissionError(errno.EACCES, "Permission denied", exe)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", exe)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", exe)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied", exe)
        # stdout and stderr go to the pty; stdin is the keeper's own (/dev/null, or hbwrap's terminal), as
        # without --pty: a program that reads stdin unattended sees EOF instead of waiting for a deadline.
        stdin_fd = os.dup(0)

        def preexec() -> None:
            os.dup2(stdin_fd, 0)
            os.close(stdin_fd)
            self._preexec()

        try:
            proc = PtyProcess.spawn([path, *command[1:]], cwd=self.spec["cwd"], env=dict(os.environ),
                                    dimensions=(PTY_ROWS, PTY_COLS), preexec_fn=preexec, pass_fds=(stdin_fd,))
        finally:
            os.close(stdin_fd)
        self.child_pid = proc.pid
        self.streams = {proc.fd: STDOUT}
        self._pty_keepalive = proc  # owns the master fd

    def _reader_caught_up(self, generation: int) -> bool:
        """May the log rotate now? Rotating deletes generation-1: only once the supervisor has reached it.

        The supervisor's read position is in the job's `cursor` file. With no supervisor reading this run
        (another run id, or a cursor untouched for CURSOR_STALE_S: dead or hung), rotation goes ahead.
        """
        try:
            st = os.stat(self.job.cursor_file)
            parts = self.job.cursor_file.read_bytes().split()
            run_id, reader_gen = parts[0].decode(), int(parts[3] if len(parts) > 3 else parts[1])
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            return True
        if run_id != self.spec["run_id"] or time.time() - st.st_mtime > CURSOR_STALE_S:
            return True
        return reader_gen >= generation - 1  # rotating deletes generation - 1

    def _handshake(self, line: str) -> None:
        try:
            os.write(self.handshake_fd, line.encode())
        except OSError:
            pass  # the supervisor is gone: carry on, the record on disk is what counts
        try:
            os.close(self.handshake_fd)
        except OSError:
            pass

    def _save(self) -> None:
        write_json_atomic(self.job.keeper_file, self.record, fsync=False)

    # --- run -------------------------------------------------------------------------------------
    def run(self) -> int:
        procs.set_child_subreaper()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        writer = LogWriter(self.job.log_file, self.job.index_file, int(self.spec["log_max_size"]),
                           may_rotate=self._reader_caught_up)
        try:
            self._spawn()
        except OSError as exc:
            code = 127 if exc.errno == errno.ENOENT else 126
            self.record.update(exec_error=code, exec_message=exc.strerror or str(exc), ended_at=time.time())
            self._save()
            self._handshake(f"exec {code} {exc.strerror or exc}\n")
            writer.close()
            self._reap_all()
            return 0
        self.record.update(child_pid=self.child_pid, child_start=procs.start_time(self.child_pid),
                           pgid=self.child_pid)
        self._save()
        self._handshake(f"ok {self.child_pid} {self.record['child_start']}\n")

        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        for fd in self.streams:
            os.set_blocking(fd, False)
            poller.register(fd, select.POLLIN)
        children_left = True
        while True:
            timeout_ms = None
            if self.stopping_since is not None:
                if self.sigkill_sent:
                    timeout_ms = SWEEP_INTERVAL_S * 1000
                else:
                    remaining = self.stopping_since + float(self.spec["grace_s"]) - time.monotonic()
                    timeout_ms = max(0.0, remaining) * 1000
            if not children_left:
                timeout_ms = 0 if self.streams else None
                if not self.streams:
                    break
            try:
                ready = poller.poll(timeout_ms)
            except InterruptedError:
                ready = []
            for fd, _ in ready:
                if fd == wake_r:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                self._pump(fd, writer, poller)
            if not children_left and not ready:
                # no process of the attempt is left, so nothing can still write: what is unread is the end
                for fd in list(self.streams):
                    self._pump(fd, writer, poller, drain=True)
                break
            if self.stop_requested and self.stopping_since is None:
                self.record["stop_requested_at"] = time.time()
                self._begin_stop()
            children_left = self._reap_all()
            if children_left and self.child_status is not None and self.stopping_since is None:
                self._begin_stop()  # the command ended but left processes behind: sweep them
            if children_left and self.stopping_since is not None:
                late = time.monotonic() >= self.stopping_since + float(self.spec["grace_s"])
                if late:
                    if not self.sigkill_sent:
                        self.sigkill_sent = True
                        self.record["sigkill_at"] = time.time()
                        self._save()
                    self._signal_all(signal.SIGKILL)
        writer.close()
        self.record["ended_at"] = time.time()
        self._save()
        return 0

    def _pump(self, fd: int, writer: LogWriter, poller, drain: bool = False) -> None:
        stream = self.streams[fd]
        for _ in range(64 if not drain else 1 << 30):
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the pty's last slave closed
                    raise
                data = b""
            if not data:
                poller.unregister(fd)
                os.close(fd)
                del self.streams[fd]
                return
            writer.write(stream, data)

    def _reap_all(self) -> bool:
        """Reap every exited child; True while any child (so any descendant) is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            except InterruptedError:
                continue
            if pid == 0:
                return True
            if pid == self.child_pid and self.child_status is None:
                self.child_status = status
                if os.WIFSIGNALED(status):
                    self.record["exit_signal"] = os.WTERMSIG(status)
                else:
                    self.record["exit_code"] = os.waitstatus_to_exitcode(status)
                self.record["exited_at"] = time.time()
                self._save()

    def _begin_stop(self) -> None:
        self.stopping_since = time.monotonic()
        self._signal_all(int(self.spec["kill_signal"]))

    def _signal_all(self, sig: int) -> None:
        if self.child_pid:
            procs.killpg_quietly(self.child_pid, sig)
        for pid in procs.descendants(os.getpid()):
            procs.kill_quietly(pid, sig)


def main(argv: list[str]) -> int:
    job_path, handshake_fd = Path(argv[1]), int(argv[2])
    job = JobDir(job_path, job_path.name)
    spec = read_json(job.keeper_spec_file)
    if spec is None:
        print("hbwrap keeper: no keeper-spec.json", file=sys.stderr)
        return 125
    return Keeper(job, spec, handshake_fd).run()


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    os._exit(code)
