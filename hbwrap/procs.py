"""Process identity from /proc, descendant discovery and signals that are only ever sent to verified processes."""
from __future__ import annotations

import os

try:  # signal's functions and constants without its IntEnums: signal.py imports enum, 0.9 MB of a keeper
    import _signal as signal
except ImportError:  # pragma: no cover - not CPython
    import signal

PR_SET_CHILD_SUBREAPER = 36


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] == b"Z":
            return None
        return int(fields[19])
    except (ValueError, IndexError):
        return None


def is_same_process(pid: int | None, recorded_start: int | None) -> bool:
    """True only if `pid` is alive and is the very process recorded (same start time): never trust a bare pid."""
    if not pid or pid <= 1 or recorded_start is None:
        return False
    return start_time(pid) == recorded_start


def alive(pid: int) -> bool:
    return start_time(pid) is not None


def _stats():
    """(pid, state, ppid) of every process in /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
            fields = data[data.rindex(b")") + 2:].split()
            yield int(entry), fields[0], int(fields[1])
        except (OSError, ValueError, IndexError):
            continue


def parent_map() -> dict[int, int]:
    """pid -> ppid for every live (non-zombie) process."""
    return {pid: ppid for pid, state, ppid in _stats() if state != b"Z"}


def children_of(ppid: int, exclude=frozenset()) -> list[int]:
    """Children of `ppid` in any state (zombies included), except those in `exclude`."""
    return [pid for pid, _state, parent in _stats() if parent == ppid and pid not in exclude]


def descendants(root: int, prune=frozenset()) -> list[int]:
    """Live descendants of `root` (not root itself), found through the parent links in /proc; the subtrees
    of the pids in `prune` (themselves included) are left out."""
    parents = parent_map()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [pid for pid in children.get(root, ()) if pid not in prune]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(child for child in children.get(pid, ()) if child not in prune)
    return found


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid and alive(int(entry)):
                members.append(int(entry))
        except OSError:
            continue
    return members


def kill_quietly(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def killpg_quietly(pgid: int, sig: int) -> bool:
    if pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def signal_verified(pid: int | None, recorded_start: int | None, sig: int) -> bool:
    """Send `sig` to `pid` only if it is still the process recorded with that start time."""
    if not is_same_process(pid, recorded_start):
        return False
    return kill_quietly(pid, sig)


def set_child_subreaper() -> bool:
    """Make this process adopt orphaned descendants (prctl PR_SET_CHILD_SUBREAPER)."""
    from hbwrap.libc import call

    try:
        return call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        return False


def pidfd_open(pid: int) -> int | None:
    """A pollable descriptor that becomes readable when `pid` exits (None where the kernel lacks pidfd)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


# What a command gets back at its default disposition (Python ignores SIGPIPE and SIGXFSZ; the keeper
# handles or ignores the others), unless hbwrap itself inherited it ignored.
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                    signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2)


def restore_default_signals(ignored: list[int] | tuple[int, ...] = ()) -> None:
    """In a child before exec: default dispositions, except those hbwrap itself inherited as ignored."""
    for sig in RESTORED_SIGNALS:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    for sig in ignored:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (OSError, ValueError):
            pass


def _nul_list(pid: int, name: str) -> list[bytes]:
    """/proc/PID/cmdline or /proc/PID/environ as its NUL-separated items ([] if unreadable)."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def cmdline(pid: int) -> list[bytes]:
    return _nul_list(pid, "cmdline")


def environ_has(pid: int, key: str, value: str) -> bool:
    return f"{key}={value}".encode() in _nul_list(pid, "environ")


def is_keeper(pid: int | None, recorded_start: int | None, job_path: str) -> bool:
    """The recorded process is alive, and is a keeper of this job (not a recycled pid or a forged record)."""
    if not is_same_process(pid, recorded_start):
        return False
    argv = cmdline(pid)
    return b"hbwrap.keeper" in argv and os.fsencode(job_path) in argv


def is_supervisor(pid: int | None, recorded_start: int | None) -> bool:
    if not is_same_process(pid, recorded_start):
        return False
    return any(b"hbwrap" in arg for arg in cmdline(pid)[:3])


def is_command(pid: int | None, recorded_start: int | None, run_id: str) -> bool:
    """The recorded command of run `run_id`: same start time, and the run id hbwrap put in its environment."""
    return is_same_process(pid, recorded_start) and environ_has(pid, "HBWRAP_RUN_ID", run_id)


def zombie_children(ppid: int) -> list[int]:
    """Children of `ppid` that have exited and wait to be reaped."""
    return [pid for pid, state, parent in _stats() if state == b"Z" and parent == ppid]


def _find(name: str, needles: list[bytes], exclude=frozenset()) -> list[int]:
    """Live processes whose /proc/PID/<name> holds every one of `needles` as a whole item."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in exclude:
            items = _nul_list(int(entry), name)
            if items and all(n in items for n in needles) and alive(int(entry)):
                found.append(int(entry))
    return found


def find_by_argv(*needles: bytes) -> list[int]:
    """Live processes whose argv holds every one of `needles` as a whole argument."""
    return _find("cmdline", list(needles))


def find_by_environ(pairs: dict[str, str], exclude=frozenset()) -> list[int]:
    """Live processes whose environment holds every KEY=VALUE of `pairs` (same user only).

    hbwrap gives each attempt's command a unique HBWRAP_RUN_ID and HBWRAP_ATTEMPT, which its descendants
    inherit: when the keeper is gone, this is how the attempt's processes are still found.
    """
    return _find("environ", [f"{k}={v}".encode() for k, v in pairs.items()], exclude)


def original_environ() -> dict[str, str]:
    """The environment this process was started with, as exec gave it (/proc/self/environ).

    os.environ may hold what Python added at start-up (PEP 538 locale coercion sets LC_CTYPE); the
    command must get exactly hbwrap's own environment (SPEC §6), so it is built from this.
    """
    items = _nul_list(os.getpid(), "environ")
    if not items:
        return dict(os.environ)
    env = {}
    for item in items:
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env
