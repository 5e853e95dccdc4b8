"""State-dir layout and the job's files: atomic JSON records, the JSONL event log, the job lock."""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from hbwrap.errors import StateError, UnknownJob
from hbwrap.model import SCHEMA_VERSION
from hbwrap.options import NAME_RE, check_name

FILE_MODE = 0o600
DIR_MODE = 0o700


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(3).hex()


def write_atomic(path: Path, payload: bytes, mode: int = FILE_MODE, fsync: bool = True) -> None:
    """Replace `path` with `payload` so that a reader sees the old or the new content, never a mix.

    The temporary file is in the same directory, named `.NAME.PID.tmp` (hidden, and not matching a
    collector's `*.prom`), and removed if anything fails.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
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
        except FileNotFoundError:
            pass
        raise


def write_json_atomic(path: Path, data: dict, fsync: bool = True) -> None:
    write_atomic(path, (json.dumps(data, sort_keys=True) + "\n").encode(), fsync=fsync)


def read_json(path: Path) -> dict | None:
    """The record at `path`, None if absent; StateError if unreadable or foreign."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4 * 1024 * 1024)
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
    """Append one whole line with a single write (O_APPEND), so concurrent readers never see half of it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """Create `path` and every missing parent with exactly `mode` (whatever the umask); existing ones are left alone.

    Path.mkdir(parents=True) gives the parents the umask's mode (0777 under `umask 000`): a world-writable
    `~/.local/state` would let anyone swap the state dir for one of theirs.
    """
    missing = []
    p = Path(os.path.abspath(path))
    while not os.path.isdir(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue  # made meanwhile by someone else: not ours to chmod
        os.chmod(d, mode)  # the umask may have taken bits away (umask 0277: 0500, unusable)


class StateDir:
    """The root holding one directory per job."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def ensure(self) -> None:
        try:
            make_dirs(self.root)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StateError(f"state dir {self.root} is not writable")
        except OSError as exc:
            raise StateError(f"cannot use state dir {self.root}: {exc.strerror or exc}") from None
        if not self.root.is_dir():
            raise StateError(f"state dir {self.root} is not a directory")

    def job(self, name: str) -> "JobDir":
        """The job dir of `name`; a malformed name (`..`, `a/b`, ...) is a usage error, never a path."""
        check_name(name, "NAME")
        return JobDir(self.root / name, name)

    def existing_job(self, name: str) -> "JobDir":
        job = self.job(name)
        if not job.path.is_dir():
            raise UnknownJob(f"no job named {name!r} in {self.root}")
        return job

    def job_names(self) -> list[str]:
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
        self.lock_file = path / "lock"
        self.cursor_file = path / "cursor"
        self.log_file = path / "output.log"
        self.index_file = path / "output.idx"
        self.default_checkpoint = path / "checkpoint"
        self.default_heartbeat = path / "heartbeat"

    def ensure(self) -> None:
        try:
            self.path.mkdir(mode=DIR_MODE, exist_ok=True)
            os.chmod(self.path, DIR_MODE)
        except OSError as exc:
            raise StateError(f"cannot create job dir {self.path}: {exc.strerror or exc}") from None

    def read_state(self) -> dict | None:
        return read_json(self.state_file)

    def write_state(self, state: dict) -> None:
        write_json_atomic(self.state_file, {**state, "schema": SCHEMA_VERSION})

    def read_keeper(self) -> dict | None:
        return read_json(self.keeper_file)

    def append_event(self, event: dict) -> None:
        append_line(self.events_file, (json.dumps(event, sort_keys=False) + "\n").encode())

    def read_events(self) -> list[dict]:
        return list(iter_events(self.events_file))


def iter_events(path: Path, start: int = 0):
    """Whole JSON lines of an event log from byte `start`; a torn or foreign line is skipped, never fatal."""
    try:
        with open(path, "rb") as f:
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
    except FileNotFoundError:
        return


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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            os.utime(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot touch heartbeat file {path}: {exc.strerror}") from None
