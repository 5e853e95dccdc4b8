"""State-dir layout and the job's files: atomic JSON records, the JSONL event log, the job lock.

Trust (ssh StrictModes): the state dir and each job dir must be directories of our own that nobody else
may write to, and every job file is opened without following symlinks and only if it is a regular file
of ours with no other hard link (open_job_file), so nobody can make hbwrap write or print another file.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import stat
import time
from pathlib import Path

from hbwrap.errors import StateError, UnknownJob
from hbwrap.model import SCHEMA_VERSION, iso, parse_iso  # noqa: F401  (re-exported for views)
from hbwrap.options import NAME_RE, check_name

FILE_MODE = 0o600
DIR_MODE = 0o700
RESERVE_SIZE = 64 * 1024  # disk set aside for a record's last write when the disk is full (make_reserve)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(3).hex()


def write_atomic(path: Path, payload: bytes, mode: int = FILE_MODE, fsync: bool = True,
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


def reserve_path(path: Path) -> Path:
    return path.with_name(path.name + ".reserve")


def make_reserve(path: Path) -> bool:
    """Set RESERVE_SIZE bytes of disk aside next to `path` (a file of zeros, written while there is space),
    unless that is done already; False if the disk refuses."""
    spare = reserve_path(path)
    try:
        st = os.lstat(spare)
        if _file_problem(st) is None and st.st_size >= RESERVE_SIZE:
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


def _use_reserve(path: Path, payload: bytes, fsync: bool) -> bool:
    """Write `payload` into the reserve's blocks (allocated already: an overwrite needs no new ones), cut it
    to size and rename it over `path`: atomic as ever. The reserve is used up; make_reserve makes another."""
    if len(payload) > RESERVE_SIZE:
        return False
    try:
        fd = open_job_file(reserve_path(path), os.O_WRONLY)
    except (OSError, StateError):
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


def _write_atomic(path: Path, payload: bytes, mode: int, fsync: bool) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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


def write_json_atomic(path: Path, data: dict, fsync: bool = True, reserve: bool = False) -> None:
    write_atomic(path, (json.dumps(data, sort_keys=True) + "\n").encode(), fsync=fsync, reserve=reserve)


def _fix(path: Path | str) -> str:
    return shlex.quote(str(path))


def _file_problem(st: os.stat_result) -> str | None:
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


def _refuse_file(path: Path | str, problem: str) -> StateError:
    return StateError(f"{path} {problem}; hbwrap only uses regular files of its own in a job dir: "
                      f"fix with: rm {_fix(path)}")


def open_job_file(path: Path | str, flags: int, mode: int = FILE_MODE) -> int:
    """os.open for a job file: never through a symlink, and only a regular file of ours with one link.

    Adds O_NOFOLLOW and O_CLOEXEC. O_TRUNC is applied only after the checks, so a hard link to another
    file is refused before anything of it is lost; the open itself never blocks (a planted FIFO). Raises
    StateError with a one-line fix for anything else; OSError (FileNotFoundError, ...) as os.open does.
    """
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse_file(path, "is a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
            raise _refuse_file(path, "is not a regular file") from None
        raise
    try:
        problem = _file_problem(os.fstat(fd))
        if problem:
            raise _refuse_file(path, problem)
        if not flags & os.O_NONBLOCK:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_job_file(path: Path | str, limit: int = -1) -> bytes:
    """The first `limit` bytes (all when -1) of a job file, opened as open_job_file does."""
    with os.fdopen(open_job_file(path, os.O_RDONLY), "rb") as f:
        return f.read(limit)


def read_json(path: Path) -> dict | None:
    """The record at `path`, None if absent; StateError if unreadable or foreign."""
    try:
        raw = read_job_file(path, 4 * 1024 * 1024)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise StateError(f"{path} is corrupt (not valid JSON)") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise StateError(f"{path} is not an hbwrap state file of schema {SCHEMA_VERSION}")
    return data


def append_line(path: Path, line: bytes) -> None:
    """Append one whole line with a single write (O_APPEND), so concurrent readers never see half of it.

    A write the disk takes only in part (it is full) is cut off again and raises OSError: the file never
    keeps half a line that the next one would be glued to (the file has one writer, so the cut is safe).
    """
    fd = open_job_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        size = os.fstat(fd).st_size
        written = os.write(fd, line)  # a write that fails writes nothing
        if written < len(line):
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    finally:
        os.close(fd)


def check_dir(path: Path, what: str, follow: bool) -> bool:
    """Refuse (StateError) a directory that someone else could change; False if it does not exist.

    `follow`: the state dir may be a symlink (to a directory of ours); a job dir may not.
    """
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateError(f"cannot use {what} {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise StateError(f"{what} {path} is a symbolic link; hbwrap makes its job dirs itself: "
                         f"fix with: rm {_fix(path)}")
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{what} {path} is not a directory")
    if st.st_uid != os.geteuid():
        me = os.geteuid()
        raise StateError(f"{what} {path} is owned by uid {st.st_uid}, not by uid {me}; "
                         f"fix with: chown {me} {_fix(path)} (or use a state dir of your own)")
    if st.st_mode & 0o022:
        who = {0o020: "group", 0o002: "others", 0o022: "group and others"}[st.st_mode & 0o022]
        raise StateError(f"{what} {path} is writable by {who}; fix with: chmod go-w {_fix(path)}")
    return True


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """Create `path` and every missing parent with exactly `mode` (whatever the umask); existing ones are left alone.

    Path.mkdir(parents=True) gives the parents the umask's mode (0777 under `umask 000`): a world-writable
    `~/.local/state` would let anyone swap the state dir for one of theirs.
    """
    missing = []
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to chmod (check_dir judges it)
        os.chmod(d, mode)  # the umask may have taken bits away (umask 0277: 0500, unusable)


class StateDir:
    """The root holding one directory per job."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def ensure(self) -> None:
        """Create the state dir (and its parents) if needed, and refuse one that others could change."""
        try:
            make_dirs(self.root)
        except OSError as exc:
            raise StateError(f"cannot use state dir {self.root}: {exc.strerror or exc}") from None
        self.check()
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StateError(f"state dir {self.root} is not writable")

    def check(self) -> bool:
        """StateError if the state dir is not a private directory of ours; False if it does not exist."""
        return check_dir(self.root, "state dir", follow=True)

    def job(self, name: str) -> "JobDir":
        """The job dir of `name`; a malformed name (`..`, `a/b`, ...) is a usage error, never a path."""
        check_name(name, "NAME")
        return JobDir(self.root / name, name)

    def existing_job(self, name: str) -> "JobDir":
        job = self.job(name)
        if not self.check() or not job.check():
            raise UnknownJob(f"no job named {name!r} in {self.root}")
        return job

    def job_names(self) -> list[str]:
        if not self.check():
            return []
        try:
            return sorted(p.name for p in self.root.iterdir()
                          if p.is_dir() and not p.name.startswith(".") and NAME_RE.fullmatch(p.name))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot read state dir {self.root}: {exc.strerror}") from None


class JobDir:
    """`<state-dir>/<name>/`: one writer per file (supervisor: state and events; keeper: its record and the log)."""

    def __init__(self, path: Path, name: str):
        self.path = path
        self.name = name
        self.state_file = path / "state.json"
        self.events_file = path / "events.jsonl"
        self.keeper_file = path / "keeper.json"
        self.keeper_spec_file = path / "keeper-spec.json"
        self.keeper_err_file = path / "keeper.err"
        self.lock_file = path / "lock"
        self.cursor_file = path / "cursor"
        self.log_file = path / "output.log"
        self.index_file = path / "output.idx"
        self.default_checkpoint = path / "checkpoint"
        self.default_heartbeat = path / "heartbeat"

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file hbwrap opens in the job dir."""
        rotated = tuple(p.with_name(p.name + ".1") for p in (self.log_file, self.index_file))
        return (self.state_file, self.events_file, self.keeper_file, self.keeper_spec_file, self.keeper_err_file,
                self.lock_file, self.cursor_file, self.log_file, self.index_file, *rotated,
                self.default_checkpoint, self.default_heartbeat, reserve_path(self.state_file),
                reserve_path(self.keeper_file))

    def check(self) -> bool:
        """StateError if the job dir is not a private directory of ours; False if it does not exist."""
        return check_dir(self.path, "job dir", follow=False)

    def check_files(self) -> None:
        """StateError for the first job file that is not a regular file of ours (a planted symlink, FIFO, link).

        Run before the job lock is taken: filelock may open `lock` with O_TRUNC, following a symlink.
        """
        for path in self.files:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StateError(f"cannot use {path}: {exc.strerror or exc}") from None
            problem = _file_problem(st)
            if problem:
                raise _refuse_file(path, problem)

    def ensure(self) -> None:
        """Create the job dir if needed; refuse it, or any file in it, if others could have planted it."""
        if not self.check():
            try:
                os.mkdir(self.path, DIR_MODE)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StateError(f"cannot create job dir {self.path}: {exc.strerror or exc}") from None
            self.check()
        try:
            os.chmod(self.path, DIR_MODE)
        except OSError as exc:
            raise StateError(f"cannot use job dir {self.path}: {exc.strerror or exc}") from None
        self.check_files()

    def read_state(self) -> dict | None:
        return read_json(self.state_file)

    def write_state(self, state: dict) -> None:
        write_json_atomic(self.state_file, {**state, "schema": SCHEMA_VERSION})

    def read_keeper(self) -> dict | None:
        return read_json(self.keeper_file)

    def append_event(self, event: dict) -> None:
        self.append_event_line(self.event_line(event))

    @staticmethod
    def event_line(event: dict) -> bytes:
        return (json.dumps(event, sort_keys=False) + "\n").encode()

    def append_event_line(self, line: bytes) -> None:
        append_line(self.events_file, line)

    def read_events(self) -> list[dict]:
        return list(iter_events(self.events_file))


def iter_events(path: Path, start: int = 0):
    """Whole JSON lines of an event log from byte `start`; a torn or foreign line is skipped, never fatal."""
    try:
        f = os.fdopen(open_job_file(path, os.O_RDONLY), "rb")
    except FileNotFoundError:
        return
    with f:
        f.seek(start)
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


def _env_path(var: str, what: str) -> Path:
    value = os.environ.get(var)
    if not value:
        from hbwrap.errors import UsageError

        raise UsageError(f"{what} only works inside a command run by `hbwrap run` (${var} is not set)")
    return Path(value)


def write_checkpoint(value: str) -> None:
    """`hbwrap checkpoint VALUE`: replace the checkpoint file atomically, so the supervisor never reads half."""
    path = _env_path("HBWRAP_CHECKPOINT_FILE", "hbwrap checkpoint")
    if "\n" in value or "\r" in value:
        from hbwrap.errors import UsageError

        raise UsageError("checkpoint: the value must be a single line")
    try:
        write_atomic(path, value.encode("utf-8", "surrogateescape") + b"\n", fsync=False)
    except OSError as exc:
        raise StateError(f"cannot write checkpoint file {path}: {exc.strerror}") from None


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
        raise StateError(f"cannot touch heartbeat file {path}: {exc.strerror}") from None
