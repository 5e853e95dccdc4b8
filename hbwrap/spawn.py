"""Starting an attempt's command for its keeper: its own process group, its environment and signal
dispositions, on pipes or on a pseudo-terminal (--pty)."""
from __future__ import annotations

import errno
import os
import subprocess

from hbwrap import procs
from hbwrap.output import STDERR, STDOUT

PTY_ROWS, PTY_COLS = 50, 500
TIOCGPTPEER = 0x5441  # _IO('T', 0x41), the asm-generic value (x86, arm, riscv, s390)
PIPE_SIZE = 1 << 20  # fewer context switches between the command and the keeper at high output rates


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
    ignored = spec.get("ignored_signals", ())
    if spec.get("pty"):
        return _spawn_pty(spec, env, ignored)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    for fd in (out_r, err_r):
        _grow_pipe(fd)
    stdin = None if spec.get("stdin_inherit") else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(spec["command"], stdin=stdin, stdout=out_w, stderr=err_w, cwd=spec["cwd"], env=env,
                                process_group=0, restore_signals=True,
                                preexec_fn=lambda: procs.restore_default_signals(ignored))
    finally:
        os.close(out_w)
        os.close(err_w)
    proc.returncode = 0  # the keeper reaps it itself; keep Popen from trying
    return proc.pid, {out_r: STDOUT, err_r: STDERR}, None


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
