"""State-dir layout and the job's files: atomic JSON records, the JSONL event log, the job lock.

Trust (ssh StrictModes): the state dir and each job dir must be directories of our own that nobody else
may write to, and every job file is opened without following symlinks and only if it is a regular file
of ours with no other hard link (open_job_file), so nobody can make hbwrap write or print another file.
"""
from __future__ import annotations

import errno
import os
import stat
import time

from hbwrap import jsonlite
from hbwrap.errors import StateError, UnknownJob
from hbwrap.jobfiles import (CURSOR_FILE, INDEX_FILE, KEEPER_FILE, LOG_FILE, STATE_FILE, file_problem, fix_hint,
                             refuse_file, reserve_path)
from hbwrap.jobfiles import (FILE_MODE, RESERVE_SIZE, make_reserve, open_job_file,  # noqa: F401 (re-exported)
                             read_job_file, touch_heartbeat, write_atomic, write_checkpoint)
from hbwrap.model import SCHEMA_VERSION, iso, parse_iso  # noqa: F401  (re-exported for views)
from hbwrap.options import NAME_RE, check_name

DIR_MODE = 0o700


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(3).hex()


def write_json_atomic(path: str, data: dict, fsync: bool = True, reserve: bool = False) -> None:
    write_atomic(path, (jsonlite.dumps(data) + "\n").encode(), fsync=fsync, reserve=reserve)


def read_json(path: str) -> dict | None:
    """The record at `path`, None if absent; StateError if unreadable or foreign."""
    try:
        raw = read_job_file(path, 4 * 1024 * 1024)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = jsonlite.loads(raw)
    except ValueError:
        raise StateError(f"{path} is corrupt (not valid JSON)") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise StateError(f"{path} is not an hbwrap state file of schema {SCHEMA_VERSION}")
    return data


def append_line(path: str, line: bytes) -> None:
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


def check_dir(path: str, what: str, follow: bool) -> bool:
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
                         f"fix with: rm {fix_hint(path)}")
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{what} {path} is not a directory")
    if st.st_uid != os.geteuid():
        me = os.geteuid()
        raise StateError(f"{what} {path} is owned by uid {st.st_uid}, not by uid {me}; "
                         f"fix with: chown {me} {fix_hint(path)} (or use a state dir of your own)")
    if st.st_mode & 0o022:
        who = {0o020: "group", 0o002: "others", 0o022: "group and others"}[st.st_mode & 0o022]
        raise StateError(f"{what} {path} is writable by {who}; fix with: chmod go-w {fix_hint(path)}")
    return True


def make_dirs(path: str, mode: int = DIR_MODE) -> None:
    """Create `path` and every missing parent with exactly `mode` (whatever the umask); existing ones are left alone.

    os.makedirs gives the parents the umask's mode (0777 under `umask 000`): a world-writable
    `~/.local/state` would let anyone swap the state dir for one of theirs.
    """
    missing = []
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to chmod (check_dir judges it)
        os.chmod(d, mode)  # the umask may have taken bits away (umask 0277: 0500, unusable)


class StateDir:
    """The root holding one directory per job."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)  # str paths: pathlib (with urllib.parse and ipaddress) is 0.7 MB of a supervisor

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
        return JobDir(os.path.join(self.root, name), name)

    def existing_job(self, name: str) -> "JobDir":
        job = self.job(name)
        if not self.check() or not job.check():
            raise UnknownJob(f"no job named {name!r} in {self.root}")
        return job

    def job_names(self) -> list[str]:
        if not self.check():
            return []
        try:
            with os.scandir(self.root) as entries:
                return sorted(e.name for e in entries
                              if e.is_dir() and not e.name.startswith(".") and NAME_RE.fullmatch(e.name))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot read state dir {self.root}: {exc.strerror}") from None


class JobDir:
    """`<state-dir>/<name>/`: one writer per file (supervisor: state and events; keeper: its record and the log)."""

    def __init__(self, path: str | os.PathLike, name: str):
        path = os.fspath(path)
        self.path = path
        self.name = name
        join = os.path.join
        self.state_file = join(path, STATE_FILE)
        self.events_file = join(path, "events.jsonl")
        self.keeper_file = join(path, KEEPER_FILE)
        self.keeper_spec_file = join(path, "keeper-spec.json")
        self.keeper_err_file = join(path, "keeper.err")
        self.lock_file = join(path, "lock")
        self.cursor_file = join(path, CURSOR_FILE)
        self.approval_file = join(path, "approval.json")  # hbwrap approve/deny's answer; the supervisor consumes it
        self.log_file = join(path, LOG_FILE)
        self.index_file = join(path, INDEX_FILE)
        self.default_checkpoint = join(path, "checkpoint")
        self.default_heartbeat = join(path, "heartbeat")

    @property
    def files(self) -> tuple[str, ...]:
        """Every file hbwrap opens in the job dir."""
        return (self.state_file, self.events_file, self.keeper_file, self.keeper_spec_file, self.keeper_err_file,
                self.lock_file, self.cursor_file, self.approval_file, self.log_file, self.index_file,
                self.log_file + ".1", self.index_file + ".1", self.default_checkpoint, self.default_heartbeat,
                reserve_path(self.state_file), reserve_path(self.keeper_file))

    def check(self) -> bool:
        """StateError if the job dir is not a private directory of ours; False if it does not exist."""
        return check_dir(self.path, "job dir", follow=False)

    def check_files(self) -> None:
        """StateError for the first job file that is not a regular file of ours (a planted symlink, FIFO, link).

        Run before the job lock is taken, so that nothing of the job is touched through a planted file.
        """
        for path in self.files:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StateError(f"cannot use {path}: {exc.strerror or exc}") from None
            problem = file_problem(st)
            if problem:
                raise refuse_file(path, problem)

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
        return (jsonlite.dumps(event, sort_keys=False) + "\n").encode()

    def append_event_line(self, line: bytes) -> None:
        append_line(self.events_file, line)

    def read_events(self) -> list[dict]:
        return list(iter_events(self.events_file))


def iter_events(path: str, start: int = 0):
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
                event = jsonlite.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


