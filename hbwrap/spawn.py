"""Starting processes without the subprocess module (0.9 MB and 3 ms per process that imports it).

  start_keeper  the supervisor starts an attempt's keeper: posix_spawn, which runs no Python in the child,
                so it is safe with the supervisor's alert and lease threads about
  start_child   the keeper starts the command or a replacement supervisor: fork and exec, with the
                command's signal dispositions set in the child (the keeper has one thread)
  spawn         the command of an attempt in its own process group, on pipes or on a pseudo-terminal

Every descriptor hbwrap opens is close-on-exec (PEP 446), so a child gets the ones it is handed and no
other; a failed exec is an OSError in the parent, with the errno of the exec (ENOENT: 127, else 126).
"""
from __future__ import annotations

import errno
import os

from hbwrap import procs
from hbwrap.output import STDERR, STDOUT
from hbwrap.procs import signal  # without signal.py's enums

PTY_ROWS, PTY_COLS = 50, 500
TIOCGPTPEER = 0x5441  # _IO('T', 0x41), the asm-generic value (x86, arm, riscv, s390)
PIPE_SIZE = 1 << 20  # fewer context switches between the command and the keeper at high output rates
HIGH_FD = 100        # where descriptors wait while posix_spawn moves them to their numbers in the child


def start_keeper(argv: list[str], env: dict[str, str], stdin_devnull: bool, out_fd: int,
                 pass_fds: list[int]) -> int:
    """posix_spawn `argv` in a session of its own: stdin /dev/null (or ours), stdout and stderr `out_fd`, and
    `pass_fds` as descriptors 3, 4, ... in that order (argv names them so). The child's pid."""
    import fcntl

    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD) for fd in (out_fd, *pass_fds)]
    try:
        actions = [(os.POSIX_SPAWN_DUP2, moved[0], 1), (os.POSIX_SPAWN_DUP2, moved[0], 2)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, 3 + i) for i, fd in enumerate(moved[1:])]
        if stdin_devnull:
            actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
        return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True, setsigmask=())
    finally:
        for fd in moved:
            os.close(fd)


class Child:
    """A process we started and must reap, as much of subprocess.Popen as the launcher uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0  # reaped elsewhere: gone, its status unknown (as Popen.poll says)
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            try:
                _pid, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except InterruptedError:
                continue
            except ChildProcessError:
                self.returncode = 0
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass


def start_child(argv: list[str], env: dict[str, str], *, cwd: str | None = None, stdin: int | None = None,
                stdout: int | None = None, stderr: int | None = None, new_session: bool = False,
                new_group: bool = False, default_signals: tuple[int, ...] = (),
                ignored_signals: tuple[int, ...] = ()) -> int:
    """fork and exec `argv` (searched in env's PATH) for a single-threaded parent; its pid.

    In the child: descriptors `stdin`, `stdout`, `stderr` become 0, 1, 2 (None: /dev/null for stdin,
    ours for the others); `default_signals` get their default disposition, `ignored_signals` are ignored;
    a process group or a session of its own; `cwd`. Raises OSError when that cannot be done or the exec
    fails, as subprocess does.
    """
    err_r, err_w = os.pipe()  # close-on-exec: EOF in the parent means the exec happened
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, until exec
        try:
            os.close(err_r)
            _prepare_child(cwd, stdin, stdout, stderr, new_session, new_group, default_signals, ignored_signals)
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(err_w, b"%d" % (exc.errno or errno.EIO))
        except BaseException:
            os.write(err_w, b"%d" % errno.EIO)
        os._exit(127)
    os.close(err_w)
    if new_group:
        try:
            os.setpgid(pid, pid)  # the child does it too: whichever comes first, a killpg finds the group
        except OSError:
            pass  # it has exec'd already (EACCES), in its own group
    try:
        report = b""
        while chunk := _read_retrying(err_r):
            report += chunk
    finally:
        os.close(err_r)
    if report:
        _reap(pid)
        code = int(report)
        raise OSError(code, os.strerror(code), argv[0])
    return pid


def _prepare_child(cwd, stdin, stdout, stderr, new_session, new_group, default_signals, ignored_signals) -> None:
    """In the forked child: descriptors, process group or session, signal dispositions, directory. (No import
    here: whatever the child imports before its exec, the keeper waits for.)"""
    if stdin is None:
        stdin = os.open(os.devnull, os.O_RDONLY)
    for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
        if fd is not None and fd != target:
            os.dup2(fd, target)  # dup2 clears close-on-exec on the copy
        elif fd == target:
            os.set_inheritable(fd, True)
    if new_session:
        os.setsid()
    elif new_group:
        os.setpgid(0, 0)
    for sig in default_signals:
        signal.signal(sig, signal.SIG_DFL)
    for sig in ignored_signals:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if cwd is not None:
        os.chdir(cwd)


def _read_retrying(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 64)
        except InterruptedError:
            continue


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


# --- an attempt's command ---------------------------------------------------------------------------

def _grow_pipe(fd: int) -> None:
    import fcntl

    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size for this user: the default size works too


def _command_env(spec: dict, base_env: dict[str, str]) -> dict[str, str]:
    env = dict(base_env)
    env.update(spec.get("env_set") or {})
    for key in spec.get("env_unset") or ():
        env.pop(key, None)
    return env


def spawn(spec: dict, base_env: dict[str, str]) -> tuple[int, dict[int, str], object]:
    """Start the command in a process group of its own: (pid, {read fd: stream}, what keeps a pty open).

    Its signal dispositions are hbwrap's own (SIGPIPE back to default; what hbwrap inherited ignored stays
    ignored); stdin is /dev/null unless hbwrap's is a terminal. OSError when it cannot be started.
    """
    env = _command_env(spec, base_env)
    ignored = tuple(spec.get("ignored_signals", ()))
    if spec.get("pty"):
        return _spawn_pty(spec, env, ignored)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    for fd in (out_r, err_r):
        _grow_pipe(fd)
    try:
        pid = start_child(list(spec["command"]), env, cwd=spec["cwd"], stdin=0 if spec.get("stdin_inherit") else None,
                          stdout=out_w, stderr=err_w, new_group=True,
                          default_signals=tuple(s for s in procs.RESTORED_SIGNALS if s not in ignored),
                          ignored_signals=ignored)
    except OSError:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return pid, {out_r: STDOUT, err_r: STDERR}, None


def _spawn_pty(spec: dict, env: dict[str, str], ignored) -> tuple[int, dict[int, str], object]:
    import shutil

    from ptyprocess import PtyProcess

    command = spec["command"]
    exe = command[0]
    path = exe if "/" in exe else shutil.which(exe, path=env.get("PATH", os.defpath))
    if path is None:
        candidates = [os.path.join(d, exe) for d in env.get("PATH", os.defpath).split(os.pathsep)]
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
        procs.restore_default_signals(ignored)

    try:
        proc = PtyProcess.spawn([path, *command[1:]], cwd=spec["cwd"], env=env, dimensions=(PTY_ROWS, PTY_COLS),
                                preexec_fn=preexec, pass_fds=(stdin_fd,))
    finally:
        os.close(stdin_fd)
    return proc.pid, {proc.fd: STDOUT}, proc  # the PtyProcess owns the master fd


def pty_peer(master_fd: int) -> int | None:
    """A descriptor of the pty's slave side for the keeper to hold until the command has exited.

    Without it, the master reads EIO as soon as the command closes its stdout and stderr while it still
    runs, and closing the master then would hang up its terminal (SIGHUP, exit 129); with it, what the
    command writes to /dev/tty afterwards is still read. None where TIOCGPTPEER is missing (Linux < 4.13):
    then the master is parked on EIO instead, and what comes after is not read.
    """
    import fcntl

    try:
        return fcntl.ioctl(master_fd, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
