"""Job files opened safely and replaced atomically, importing only os, stat, fcntl and errno.

`hbwrap beat` and `hbwrap checkpoint VALUE` run inside a job's loops, once per item: they come here
straight from entry.py, without the CLI framework or the state-dir code (jobstore.py builds on these).
Trust (ssh StrictModes): a job file is opened without following symlinks and only if it is a regular
file of ours with no other hard link, so nobody can make hbwrap write or print another file.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat



def _state_error(message: str) -> Exception:
    from hbwrap.errors import StateError  # only when there is an error: beat and checkpoint need no enum

    return StateError(message)


def _usage_error(message: str) -> Exception:
    from hbwrap.errors import UsageError

    return UsageError(message)

FILE_MODE = 0o600
# Files of a job dir that the keeper uses too (jobstore.JobDir names them all).
STATE_FILE, KEEPER_FILE, CURSOR_FILE = "state.json", "keeper.json", "cursor"
LOG_FILE, INDEX_FILE = "output.log", "output.idx"
RESERVE_SIZE = 64 * 1024  # disk set aside for a record's last write when the disk is full (make_reserve)


def write_atomic(path: str | os.PathLike, payload: bytes, mode: int = FILE_MODE, fsync: bool = True,
                 reserve: bool = False) -> None:
    """Replace `path` with `payload` so that a reader sees the old or the new content, never a mix.

    The temporary file is in the same directory, named `.NAME.PID.tmp` (hidden, and not matching a
    collector's `*.prom`), created exclusively (a leftover, or a symlink planted there, is removed first,
    never written through), and removed if anything fails. Replacing a symlink at `path` replaces the
    link, not its target. With `reserve`, a full disk (ENOSPC, EDQUOT) is met with the space
    make_reserve set aside for `path`: for a record's last word (how a run or an attempt ended).
    """
    try:
        _write_atomic(path, payload, mode, fsync)
    except OSError as exc:
        if not reserve or exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not _use_reserve(path, payload, fsync):
            raise


def reserve_path(path: str | os.PathLike) -> str:
    return os.fspath(path) + ".reserve"


def make_reserve(path: str | os.PathLike) -> bool:
    """Set RESERVE_SIZE bytes of disk aside next to `path` (a file of zeros, written while there is space),
    unless that is done already; False if the disk refuses."""
    spare = reserve_path(path)
    try:
        st = os.lstat(spare)
        if file_problem(st) is None and st.st_size >= RESERVE_SIZE:
            return True
    except FileNotFoundError:
        pass
    except OSError:
        return False
    try:
        _write_atomic(spare, bytes(RESERVE_SIZE), FILE_MODE, False)
    except OSError:
        return False
    return True


def _use_reserve(path: str | os.PathLike, payload: bytes, fsync: bool) -> bool:
    """Write `payload` into the reserve's blocks (allocated already: an overwrite needs no new ones), cut it
    to size and rename it over `path`: atomic as ever. The reserve is used up; make_reserve makes another."""
    if len(payload) > RESERVE_SIZE:
        return False
    try:
        fd = open_job_file(reserve_path(path), os.O_WRONLY)
    except OSError:  # (a planted file is refused as StateError, an OSError too)
        return False
    try:
        try:
            if os.fstat(fd).st_size < len(payload):
                return False
            view, done = memoryview(payload), 0
            while done < len(payload):
                done += os.pwrite(fd, view[done:], done)
            os.ftruncate(fd, len(payload))
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(reserve_path(path), path)
    except OSError:
        return False
    return True


def _write_atomic(path: str | os.PathLike, payload: bytes, mode: int, fsync: bool) -> None:
    head, tail = os.path.split(os.fspath(path))
    tmp = os.path.join(head, f".{tail}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
    except FileExistsError:
        os.unlink(tmp)
        fd = os.open(tmp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # gone already, or a read-only file system (where it could not have been made)
        raise


def fix_hint(path: str | os.PathLike) -> str:
    import shlex  # only for the message

    return shlex.quote(os.fspath(path))


def file_problem(st: os.stat_result) -> str | None:
    """Why a job file with this (l)stat is not one hbwrap may use, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by uid {os.geteuid()}"
    if st.st_nlink > 1:
        return "has another hard link"  # a link to someone's file: writing it would change theirs
    return None


def refuse_file(path: str | os.PathLike, problem: str) -> Exception:
    return _state_error(f"{path} {problem}; hbwrap only uses regular files of its own in a job dir: "
                      f"fix with: rm {fix_hint(path)}")


def open_job_file(path: str | os.PathLike, flags: int, mode: int = FILE_MODE) -> int:
    """os.open for a job file: never through a symlink, and only a regular file of ours with one link.

    Adds O_NOFOLLOW and O_CLOEXEC. O_TRUNC is applied only after the checks, so a hard link to another
    file is refused before anything of it is lost; the open itself never blocks (a planted FIFO). Raises
    StateError with a one-line fix for anything else; OSError (FileNotFoundError, ...) as os.open does.
    """
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse_file(path, "is a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
            raise refuse_file(path, "is not a regular file") from None
        raise
    try:
        problem = file_problem(os.fstat(fd))
        if problem:
            raise refuse_file(path, problem)
        if not flags & os.O_NONBLOCK:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_job_file(path: str | os.PathLike, limit: int = -1) -> bytes:
    """The first `limit` bytes (all when -1) of a job file, opened as open_job_file does."""
    with os.fdopen(open_job_file(path, os.O_RDONLY), "rb") as f:
        return f.read(limit)


def _env_path(var: str, what: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise _usage_error(f"{what} only works inside a command run by `hbwrap run` (${var} is not set)")
    return value


def write_checkpoint(value: str) -> None:
    """`hbwrap checkpoint VALUE`: replace the checkpoint file atomically, so the supervisor never reads half."""
    path = _env_path("HBWRAP_CHECKPOINT_FILE", "hbwrap checkpoint")
    if "\n" in value or "\r" in value:
        raise _usage_error("checkpoint: the value must be a single line")
    try:
        write_atomic(path, value.encode("utf-8", "surrogateescape") + b"\n", fsync=False)
    except OSError as exc:
        raise _state_error(f"cannot write checkpoint file {path}: {exc.strerror}") from None


def touch_heartbeat() -> None:
    """`hbwrap beat`: update the heartbeat file's modification time (creating it if needed)."""
    path = _env_path("HBWRAP_HEARTBEAT_FILE", "hbwrap beat")
    try:
        fd = open_job_file(path, os.O_WRONLY | os.O_CREAT)
        try:
            os.utime(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _state_error(f"cannot touch heartbeat file {path}: {exc.strerror}") from None
