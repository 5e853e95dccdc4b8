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


# --- process tables and trees (incidents, --activity) ----------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ProcStat(tuple):
    """The fields of /proc/PID/stat that hbwrap uses (times in clock ticks, rss in pages): a namedtuple made
    by hand, as collections is half a megabyte the keeper does without."""

    __slots__ = ()
    _fields = ("pid", "comm", "state", "ppid", "pgid", "sid", "utime", "stime", "cutime", "cstime", "threads",
               "start", "rss_pages")

    def __new__(cls, *values):
        if len(values) != len(cls._fields):
            raise TypeError(f"ProcStat takes {len(cls._fields)} values, not {len(values)}")
        return tuple.__new__(cls, values)

    def __repr__(self) -> str:
        return "ProcStat(" + ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self)) + ")"


for _i, _name in enumerate(ProcStat._fields):
    setattr(ProcStat, _name, property(lambda self, i=_i: self[i]))
del _i, _name


def parse_stat(pid: int, data: bytes) -> ProcStat | None:
    try:
        close = data.rindex(b")")
        comm = data[data.index(b"(") + 1:close].decode("utf-8", "replace")
        f = data[close + 2:].split()
        return ProcStat(pid, comm, f[0].decode("ascii", "replace"), int(f[1]), int(f[2]), int(f[3]),
                        int(f[11]), int(f[12]), int(f[13]), int(f[14]), int(f[17]), int(f[19]), int(f[21]))
    except (ValueError, IndexError):
        return None


def read_stat(pid: int) -> ProcStat | None:
    """/proc/PID/stat parsed (zombies included), None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_stat(pid, f.read())
    except OSError:
        return None


def proc_table() -> dict[int, ProcStat]:
    """Every process on the system, from one pass over /proc (processes that exit meanwhile are left out)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = read_stat(int(entry))
            if st is not None:
                table[st.pid] = st
    return table


def subtree_table(root: int) -> dict[int, ProcStat] | None:
    """`root` and its descendants, walked down through /proc/PID/task/TID/children: a cost of the tree's size,
    where proc_table's is of the whole system's (a hundred jobs each scanning every process of the others
    was most of their CPU). None when `root` is gone or the kernel has no children files."""
    table: dict[int, ProcStat] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            continue
        st = read_stat(pid)
        if st is None:
            if pid == root:
                return None
            continue  # exited meanwhile
        table[pid] = st
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    stack.extend(int(c) for c in f.read().split())
            except FileNotFoundError:
                if pid == root and tid == str(pid):
                    return None  # no CONFIG_PROC_CHILDREN
            except (OSError, ValueError):
                pass
    return table


def tree_pids(root_pids, table: dict[int, ProcStat]) -> list[int]:
    """The processes of the tree under `root_pids`, parents before children (siblings by pid).

    Members: each root, every process whose process group id is a root (the command's group, also after
    its leader exited), and every descendant of those. Roots <= 1 are ignored (never init's tree), as are
    roots not in `table`, except as process group ids.
    """
    roots = {int(r) for r in root_pids if r and int(r) > 1}
    children: dict[int, list[int]] = {}
    for st in table.values():
        children.setdefault(st.ppid, []).append(st.pid)
    members: set[int] = set()
    stack = [pid for pid in table if pid in roots or table[pid].pgid in roots]
    while stack:
        pid = stack.pop()
        if pid not in members:
            members.add(pid)
            stack.extend(children.get(pid, ()))
    ordered: list[int] = []
    for top in sorted(pid for pid in members if table[pid].ppid not in members):
        stack = [top]
        while stack:
            pid = stack.pop()
            ordered.append(pid)
            stack.extend(sorted((c for c in children.get(pid, ()) if c in members), reverse=True))
    return ordered


def read_io(pid: int) -> tuple[int, int] | None:
    """(rchar, wchar) of /proc/PID/io: bytes passed to read()/write() and friends, own and reaped children's."""
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rchar = wchar = None
    for line in data.split(b"\n", 2)[:2]:
        key, _, value = line.partition(b":")
        if key == b"rchar":
            rchar = int(value)
        elif key == b"wchar":
            wchar = int(value)
    return None if rchar is None or wchar is None else (rchar, wchar)
