"""`--activity cpu,io`: the CPU time and I/O of the command's process tree, and whether they grew enough to count.

Measurement (`sample_tree`, `tree_activity`) reads /proc; the decision (`activity_alive`) is pure.

CPU is utime+stime of every live process of the tree plus cutime+cstime (what its reaped children
used), and, for the keeper, only cutime+cstime: the keeper's own work is not the command's, but the
children it reaped (the command, orphans it adopted as subreaper) were. The total is continuous while
processes exit: a child's time moves into its parent's cutime when the parent reaps it.

I/O is rchar+wchar of /proc/PID/io, not read_bytes/write_bytes. The storage counters miss what busy
silent jobs mostly do: reads served from the page cache (a compiler, pg_dump of a warm database),
network transfers (rsync over ssh, a download), and anything on tmpfs or filesystems that do not
account block I/O (both stay 0 in many containers). rchar/wchar count every byte passed to read(),
write() and their relatives, sockets and pipes included; a read that returns nothing adds nothing, so an
idle `sleep` or a process blocked on a socket stays at 0. The keeper's counters are left out: it copies
the output (already a sign of life) and reads the job's files. Growth is measured per process (same pid
and start time in both samples, or a process new since the first), so a process that exits does not
hide the I/O of the others.
"""
from __future__ import annotations

import collections
import time

from hbwrap import proctable
from hbwrap.errors import UsageError

KINDS = ("cpu", "io")
CPU_MIN_SHARE = 0.01  # of one core, over the time between the samples


# per process: start (start time in clock ticks since boot: identity), cpu_ticks (utime + stime),
# child_cpu_ticks (cutime + cstime: reaped children), read_bytes (rchar), write_bytes (wchar)
ProcSample = collections.namedtuple("ProcSample", "start cpu_ticks child_cpu_ticks read_bytes write_bytes")


def parse_activity(text: str | list | tuple | None, option: str = "--activity") -> tuple[str, ...]:
    """`cpu,io` -> ("cpu", "io"); `none` or empty -> (); anything else is a usage error naming the option."""
    if text is None:
        return ()
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    kinds: list[str] = []
    for item in items:
        kind = str(item).strip().lower()
        if kind in ("", "none") and len(items) == 1:
            return ()
        if kind not in KINDS:
            raise UsageError(f"{option}: unknown kind {item!r} (use cpu, io or cpu,io)")
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def sample_tree(root_pids, *, keeper_pid: int | None = None, now_mono: float | None = None,
                table: dict[int, proctable.ProcStat] | None = None) -> dict:
    """CPU and I/O counters of each process of the tree under `root_pids` (see proctable.tree_pids).

    Returns {"mono", "keeper_pid", "procs": {pid: ProcSample}, "cpu_s", "io_bytes"}; the totals leave out
    the keeper's own counters (module docstring). With the keeper among the roots, a walk down from it
    (proctable.subtree_table), else one pass over /proc; plus /proc/PID/io of the members: about a millisecond
    for a small tree, so it can run every few seconds.
    """
    now = time.monotonic() if now_mono is None else now_mono
    if table is None and keeper_pid is not None:
        # the keeper is a child subreaper: everything of the attempt is below it
        table = proctable.subtree_table(keeper_pid)
    if table is None:
        table = proctable.proc_table()
    samples: dict[int, ProcSample] = {}
    cpu_ticks = 0
    io_bytes = 0
    for pid in proctable.tree_pids(root_pids, table):
        st = table[pid]
        io = proctable.read_io(pid) or (0, 0)
        samples[pid] = ProcSample(st.start, st.utime + st.stime, st.cutime + st.cstime, io[0], io[1])
        cpu_ticks += st.cutime + st.cstime
        if pid != keeper_pid:
            cpu_ticks += st.utime + st.stime
            io_bytes += io[0] + io[1]
    return {"mono": now, "keeper_pid": keeper_pid, "procs": samples,
            "cpu_s": cpu_ticks / proctable.CLK_TCK, "io_bytes": io_bytes}


def tree_activity(root_pids, *, keeper_pid: int | None = None) -> tuple[float, int]:
    """(CPU seconds, I/O bytes) of the tree so far: the totals of `sample_tree`."""
    sample = sample_tree(root_pids, keeper_pid=keeper_pid)
    return sample["cpu_s"], sample["io_bytes"]


def _io_growth(prev: dict, cur: dict) -> int:
    before, keeper = prev.get("procs") or {}, cur.get("keeper_pid")
    grown = 0
    for pid, now in (cur.get("procs") or {}).items():
        if pid == keeper:
            continue
        then = before.get(pid)
        if then is not None and then.start == now.start:
            grown += max(0, now.read_bytes - then.read_bytes) + max(0, now.write_bytes - then.write_bytes)
        else:
            grown += now.read_bytes + now.write_bytes  # started since: all of it is new
    return grown


def growth(prev, cur) -> tuple[float, int]:
    """(CPU seconds, I/O bytes) gained between two samples: `sample_tree` dicts or (cpu_s, io_bytes) pairs."""
    if isinstance(prev, dict) and isinstance(cur, dict):
        return max(0.0, cur["cpu_s"] - prev["cpu_s"]), _io_growth(prev, cur)
    (cpu0, io0), (cpu1, io1) = _pair(prev), _pair(cur)
    return max(0.0, cpu1 - cpu0), max(0, io1 - io0)


def _pair(sample) -> tuple[float, int]:
    if isinstance(sample, dict):
        return sample["cpu_s"], sample["io_bytes"]
    cpu_s, io_bytes = sample
    return float(cpu_s), int(io_bytes)


def activity_alive(prev_sample, cur_sample, elapsed_s: float, kinds) -> tuple[bool, str]:
    """Did the tree show life between two samples `elapsed_s` apart, by the `kinds` asked for?

    cpu: CPU time grew by at least 1% of one core over `elapsed_s`; io: the I/O counters grew at all.
    The detail names what was measured, e.g. "0.0% CPU, 0 bytes I/O over 5m". Pure: no clock, no /proc.
    """
    kinds = tuple(kinds)
    cpu_s, io_bytes = growth(prev_sample, cur_sample)
    elapsed_s = max(0.0, float(elapsed_s))
    share = cpu_s / elapsed_s if elapsed_s > 0 else 0.0
    alive = False
    parts = []
    if "cpu" in kinds:
        alive = alive or (elapsed_s > 0 and cpu_s >= CPU_MIN_SHARE * elapsed_s) or (elapsed_s == 0 and cpu_s > 0)
        parts.append(f"{share * 100:.1f}% CPU")
    if "io" in kinds:
        alive = alive or io_bytes > 0
        parts.append(f"{fmt_bytes(io_bytes)} I/O")
    return alive, f"{', '.join(parts) or 'no activity measured'} over {fmt_span(elapsed_s)}"


def fmt_bytes(n: int) -> str:
    """`0 bytes`, `512 bytes`, `1.5 kB`, `12 MB`, `3.1 GB` (decimal units, as --log-max-size speaks)."""
    n = int(n)
    if n < 1000:
        return f"{n} byte" if n == 1 else f"{n} bytes"
    for unit, size in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        if n < size * 1000 or unit == "TB":
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} bytes"


def fmt_span(seconds: float) -> str:
    """`250ms`, `4.5s`, `45s`, `5m`, `5m30s`, `2h`, `1h05m`, `3d4h`: what an operator would write."""
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 10:
        return f"{s:.1f}s".replace(".0s", "s")
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        m, sec = divmod(round(s), 60)
        return f"{m}m" if not sec else f"{m}m{sec:02d}s"
    if s < 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h}h" if not m else f"{h}h{m:02d}m"
    d, h = divmod(round(s / 3600), 24)
    return f"{d}d" if not h else f"{d}d{h}h"
