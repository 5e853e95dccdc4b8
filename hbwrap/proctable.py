"""Process tables and trees from /proc, for incidents and `--activity`: what the processes of a job's tree
are doing (state, CPU ticks, RSS, I/O bytes), read in one pass.

Only the modules that sample trees import it (incident.py, activity.py), so a supervisor or keeper that
never samples one does not hold its code; process identity and signals are procs.py's.
"""
from __future__ import annotations

import os

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
