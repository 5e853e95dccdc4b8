"""Incidents: what the attempt's process tree was doing at the instant hbwrap decided to stop it.

`snapshot` reads /proc once per process (stat, wchan, cmdline, io, fd links) and each network
namespace's /proc/net/{tcp,tcp6,udp,udp6} once per snapshot; `make_incident` wraps it with what fired;
`render_text` and `summary_lines` show it; `IncidentStore` keeps the last 20 per job. Processes that
exit while being read are kept with what was read and marked `gone`.
"""
from __future__ import annotations

import os
import re
import sys
import time

from hbwrap import jsonlite, procs, proctable
from hbwrap.activity import fmt_bytes, fmt_span
from hbwrap.argvmask import mask_argv
from hbwrap.errors import StateError
from hbwrap.jobstore import DIR_MODE, FILE_MODE, iso, write_atomic

try:  # socket's C half: inet_ntop without socket.py's enums and selectors (4 ms at the stall that needs them)
    import _socket
except ImportError:  # pragma: no cover - not CPython
    import socket as _socket

INCIDENT_SCHEMA = 1
KEEP_INCIDENTS = 20
OUTPUT_TAIL_LINES = 50
OUTPUT_LINE_MAX_CHARS = 500
SOCKETS_LISTED_MAX = 50       # per process; the counts by state cover all of them
STACK_DUMP_MAX_BYTES = 64 * 1024

STATE_WORDS = {"R": "running", "S": "sleeping", "D": "disk sleep", "Z": "zombie", "T": "stopped",
               "t": "tracing stop", "X": "dead", "I": "idle", "P": "parked", "W": "waking", "K": "wakekill"}
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
UDP_STATES = {1: "ESTABLISHED", 7: "UNCONN"}
_NET_TABLES = ("tcp", "tcp6", "udp", "udp6")


# --- reading one process ----------------------------------------------------------------------------

def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _socket_inodes(pid: int) -> list[int] | None:
    """Inodes of the process's sockets (None when its fds cannot be read: gone, or not ours)."""
    base = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return None
    inodes = []
    for fd in fds:
        try:
            link = os.readlink(f"{base}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.append(int(link[8:-1]))
    return inodes


def _netns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return "?"


# --- /proc/net ----------------------------------------------------------------------------------------

def _address(field: bytes) -> str:
    """`0100007F:1F90` -> `127.0.0.1:8080`; IPv6 as `[::1]:8080` (the kernel prints 32-bit words in host order)."""
    host, _, port = field.partition(b":")
    raw = bytes.fromhex(host.decode("ascii"))
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return f"{_socket.inet_ntop(_socket.AF_INET, raw)}:{int(port, 16)}"
    return f"[{_socket.inet_ntop(_socket.AF_INET6, raw)}]:{int(port, 16)}"


def _net_sockets(proc_dir: str, wanted: set[int]) -> dict[int, dict]:
    """inode -> socket for the wanted inodes, from one namespace's TCP and UDP tables."""
    found: dict[int, dict] = {}
    for table in _NET_TABLES:
        data = _read(f"{proc_dir}/net/{table}")
        if not data:
            continue
        proto = table[:3]
        states = TCP_STATES if proto == "tcp" else UDP_STATES
        for line in data.split(b"\n")[1:]:
            f = line.split()
            if len(f) < 10:
                continue
            try:
                inode = int(f[9])
                if inode not in wanted:
                    continue
                code = int(f[3], 16)
                found[inode] = {"proto": table, "local": _address(f[1]), "remote": _address(f[2]),
                                "state": states.get(code, f"0x{code:02X}")}
            except (ValueError, OSError):
                continue
    return found


def _resolve_sockets(by_pid: dict[int, list[int]]) -> dict[int, dict]:
    """inode -> socket for every process's socket inodes: each network namespace's tables read once."""
    namespaces: dict[str, list[int]] = {}
    for pid, inodes in by_pid.items():
        if inodes:
            namespaces.setdefault(_netns(pid), []).append(pid)
    found: dict[int, dict] = {}
    for pids in namespaces.values():
        wanted = {i for pid in pids for i in by_pid[pid]}
        for pid in pids:  # read the tables through a member of the namespace (any one that is still there)
            if os.path.isdir(f"/proc/{pid}/net"):
                found.update(_net_sockets(f"/proc/{pid}", wanted))
                break
    return found


# --- the snapshot -------------------------------------------------------------------------------------

def _cpu_share(pid: int, st: proctable.ProcStat, baseline: dict | None, now_mono: float, age_s: float):
    """(share of one core, over how many seconds): since the baseline if it knew this process, else lifetime."""
    cpu_ticks = st.utime + st.stime
    if baseline:
        then = (baseline.get("procs") or {}).get(pid)
        window_s = now_mono - float(baseline.get("mono", now_mono))
        if then is not None and then[0] == st.start and window_s > 0:  # (start, cpu_ticks, ...)
            return max(0, cpu_ticks - then[1]) / proctable.CLK_TCK / window_s, window_s
    if age_s <= 0:
        return 0.0, 0.0
    return cpu_ticks / proctable.CLK_TCK / age_s, age_s


def _by_state(sockets: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in sockets:
        key = f"{s['proto'].rstrip('6')} {s['state']}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _process(pid: int, st: proctable.ProcStat, depth: int, reads: dict, ctx: dict) -> dict:
    age_s = max(0.0, ctx["boot_now"] - st.start / proctable.CLK_TCK)
    share, over_s = _cpu_share(pid, st, ctx["baseline"], ctx["now_mono"], age_s)
    raw_argv = reads["cmdline"]
    argv = [a.decode("utf-8", "replace") for a in raw_argv.split(b"\0")[:-1]] if raw_argv else []
    if not argv:
        argv = [f"[{st.comm}]"]
    wchan = (reads["wchan"] or b"").decode("ascii", "replace").strip()
    inodes = reads["inodes"]
    inet = [ctx["sockets"][i] for i in inodes or () if i in ctx["sockets"]]
    io = reads["io"]
    return {
        "pid": pid, "ppid": st.ppid, "pgid": st.pgid, "sid": st.sid, "depth": depth,
        "name": st.comm, "state": st.state, "state_word": STATE_WORDS.get(st.state, "unknown"),
        "wchan": wchan if wchan and wchan != "0" else None, "threads": st.threads,
        "cpu_s": round((st.utime + st.stime) / proctable.CLK_TCK, 2),
        "cpu_share": round(share, 4), "cpu_share_over_s": round(over_s, 1),
        "rss_bytes": st.rss_pages * proctable.PAGE_SIZE, "age_s": round(age_s, 1),
        "argv": mask_argv(argv, ctx["secrets"]),
        "io_read_bytes": io[0] if io else None, "io_write_bytes": io[1] if io else None,
        "sockets": inet[:SOCKETS_LISTED_MAX], "sockets_by_state": _by_state(inet),
        "other_sockets": None if inodes is None else len(inodes) - len(inet),
        "keeper": pid == ctx["keeper_pid"], "gone": reads["gone"],
    }


def _depths(pids: list[int], table: dict[int, proctable.ProcStat]) -> dict[int, int]:
    depth: dict[int, int] = {}
    for pid in pids:  # parents come first (tree order)
        ppid = table[pid].ppid
        depth[pid] = depth[ppid] + 1 if ppid in depth else 0
    return depth


def snapshot(root_pids, *, cpu_baseline: dict | None = None, now_mono: float, now_wall: float,
             secrets=(), keeper_pid: int | None = None, table: dict[int, proctable.ProcStat] | None = None) -> dict:
    """The tree under `root_pids` (proctable.tree_pids: the keeper and the command's pgid) at this instant.

    `cpu_baseline` is an earlier `activity.sample_tree` of the same tree: CPU shares are over the time
    since then for processes it knew, over their lifetime otherwise. `secrets` are exact strings masked
    in command lines (webhook URLs and the like) on top of the built-in rules. Never raises for a
    process that vanishes; the caller must have verified that the roots are its own processes.
    `table` is a `proctable.proc_table()` already read (shared with a `sample_tree` of the same instant).
    """
    started = time.perf_counter()
    table = proctable.proc_table() if table is None else table
    pids = proctable.tree_pids(root_pids, table)
    reads: dict[int, dict] = {}
    for pid in pids:
        r = {"wchan": _read(f"/proc/{pid}/wchan"), "cmdline": _read(f"/proc/{pid}/cmdline"),
             "io": proctable.read_io(pid), "inodes": _socket_inodes(pid), "gone": False}
        after = proctable.read_stat(pid)
        if after is None or after.start != table[pid].start:
            # exited while being read (or its pid already reused): what was read may not be its own
            r = {"wchan": None, "cmdline": None, "io": None, "inodes": None, "gone": True}
        reads[pid] = r
    ctx = {"boot_now": time.clock_gettime(time.CLOCK_BOOTTIME), "now_mono": now_mono, "baseline": cpu_baseline,
           "secrets": tuple(secrets), "keeper_pid": keeper_pid,
           "sockets": _resolve_sockets({pid: r["inodes"] for pid, r in reads.items() if r["inodes"]})}
    depths = _depths(pids, table)
    processes = [_process(pid, table[pid], depths[pid], reads[pid], ctx) for pid in pids]
    window = None
    if cpu_baseline and "mono" in cpu_baseline:
        window = round(now_mono - float(cpu_baseline["mono"]), 1)
    return {
        "taken_at": iso(now_wall), "roots": [int(r) for r in root_pids if r], "keeper_pid": keeper_pid,
        "cpu_window_s": window, "processes": processes,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
    }


# --- the incident record ------------------------------------------------------------------------------

def tail_lines(output: bytes, n: int = OUTPUT_TAIL_LINES) -> list[str]:
    """The last `n` lines of output as text: a line rewritten with `\\r` shows its last state; bounded."""
    text = output[-(n + 1) * 4 * OUTPUT_LINE_MAX_CHARS:].decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for line in lines[-n:]:
        line = line.rstrip("\r").rsplit("\r", 1)[-1]
        out.append(line if len(line) <= OUTPUT_LINE_MAX_CHARS else line[:OUTPUT_LINE_MAX_CHARS] + "...")
    return out


_DUMP_START = re.compile(rb"^(?:Fatal Python error|Current thread 0x|Thread 0x[0-9a-f]+ \(most recent call first\)"
                         rb"|Stack \(most recent call first\)|SIGQUIT: quit|goroutine \d+ \[|Full thread dump)",
                         re.MULTILINE)


def stack_dump_from(output: bytes, max_bytes: int = STACK_DUMP_MAX_BYTES) -> str | None:
    """The stack dump in output written after `--dump-signal` (Python faulthandler, Go, Java), else None."""
    m = _DUMP_START.search(output)
    if not m:
        return None
    dump = output[m.start():m.start() + max_bytes]
    return dump.decode("utf-8", "replace").rstrip("\n") + ("\n..." if len(output) - m.start() > max_bytes else "")


def make_incident(*, job: str, run_id: str, attempt: int, reason: str, detail: str, tree: dict,
                  figures: dict | None = None, output_tail: list[str] | None = None,
                  checkpoint: str | None = None, stack_dump: str | None = None, at_wall: float | None = None,
                  **extra) -> dict:
    """An incident record: what fired (`reason`, `detail`, `figures`), the tree, the output tail, the rest."""
    at = time.time() if at_wall is None else at_wall
    record = {"schema": INCIDENT_SCHEMA, "id": None, "job": job, "run_id": run_id, "attempt": int(attempt),
              "reason": reason, "detail": detail, "figures": dict(figures or {}), "at": iso(at),
              "tree": tree, "output_tail": list(output_tail or []), "checkpoint": checkpoint,
              "stack_dump": stack_dump}
    record.update(extra)
    return record


# --- showing it ---------------------------------------------------------------------------------------

def _sockets_text(proc: dict) -> str:
    parts = [f"{k}:{n}" for k, n in (proc.get("sockets_by_state") or {}).items()]
    return " ".join(parts) if parts else "-"


def _share_text(proc: dict) -> str:
    return f"{float(proc.get('cpu_share') or 0.0) * 100:.1f}%"


def process_line(proc: dict) -> str:
    """One process: pid, state, wait channel, CPU share, RSS, age, sockets by state, command line."""
    flags = " (keeper)" if proc.get("keeper") else ""
    flags += " (gone)" if proc.get("gone") else ""
    return (f"{'  ' * int(proc.get('depth') or 0)}{proc['pid']} {proc['state']} {proc.get('state_word', '')}"
            f"  wchan {proc.get('wchan') or '-'}  cpu {_share_text(proc)}  rss {fmt_bytes(proc.get('rss_bytes') or 0)}"
            f"  age {fmt_span(proc.get('age_s') or 0)}  sockets {_sockets_text(proc)}{flags}"
            f"  {_argv_text(proc.get('argv') or [])}")


def _argv_text(argv: list[str], limit: int = 240) -> str:
    """A command line on one line: whitespace runs (a `python -c` script's newlines) shown as one space."""
    text = " ".join(" ".join(str(a).split()) for a in argv)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def render_text(incident: dict) -> str:
    """The incident for a human: what fired and its figures, the tree, the last output, checkpoint, stack dump."""
    tree = incident.get("tree") or {}
    processes = tree.get("processes") or []
    out = [f"incident {incident.get('id') or '(unsaved)'}: job {incident.get('job')}, run {incident.get('run_id')}, "
           f"attempt {incident.get('attempt')}",
           f"{incident.get('reason')} at {incident.get('at')}: {incident.get('detail')}"]
    figures = incident.get("figures") or {}
    if figures:
        out.append("  " + ", ".join(f"{k} {_figure(v)}" for k, v in figures.items()))
    window = tree.get("cpu_window_s")
    over = f"CPU share over the last {fmt_span(window)}" if window else "CPU share over each process's lifetime"
    out.append(f"process tree ({len(processes)} processes; {over}):")
    out.extend("  " + process_line(p) for p in processes)
    if not processes:
        out.append("  (no process left)")
    tail = incident.get("output_tail") or []
    out.append(f"last {len(tail)} lines of output:" if tail else "output: none")
    out.extend("  | " + line for line in tail)
    out.append(f"checkpoint: {incident.get('checkpoint') if incident.get('checkpoint') is not None else '-'}")
    dump = incident.get("stack_dump")
    if dump:
        out.append("stack dump:")
        out.extend("  " + line for line in dump.splitlines())
    return "\n".join(out) + "\n"


def _figure(value) -> str:
    if isinstance(value, float):
        return f"{round(value, 3):g}"
    return str(value)


def summary_lines(incident: dict, max_lines: int = 8) -> list[str]:
    """Short lines for chat alerts, one per process of the command (the keeper left out)."""
    processes = [p for p in (incident.get("tree") or {}).get("processes") or [] if not p.get("keeper")]
    lines = []
    for proc in processes:
        if len(lines) == max_lines - 1 and len(processes) > max_lines:
            lines.append(f"... and {len(processes) - len(lines)} more processes")
            break
        state = f"{proc['state']} {proc.get('state_word', '')}".strip()
        wchan = f", in {proc['wchan']}" if proc.get("wchan") else ""
        sockets = _sockets_text(proc)
        lines.append(f"{proc.get('name')}[{proc['pid']}] {state}{wchan}, {_share_text(proc)} CPU"
                     + (f", {sockets}" if sockets != "-" else ""))
    return lines


# --- the store ----------------------------------------------------------------------------------------

_ID_RE = re.compile(r"([A-Za-z0-9._-]{1,100})-(\d{1,6})-(\d{1,6})")


class IncidentStore:
    """`<job dir>/incidents/<id>.json`, id `<run_id>-<attempt>-<n>`; the newest KEEP_INCIDENTS are kept."""

    def __init__(self, job_dir: str | os.PathLike, keep: int = KEEP_INCIDENTS):
        self.dir = os.path.join(os.fspath(job_dir), "incidents")
        self.keep = keep

    def path_of(self, incident_id: str) -> str:
        if not isinstance(incident_id, str) or not _ID_RE.fullmatch(incident_id):
            raise ValueError(f"not an incident id: {incident_id!r}")
        return os.path.join(self.dir, f"{incident_id}.json")

    def _ensure_dir(self) -> None:
        try:
            try:
                os.mkdir(self.dir, DIR_MODE)
            except FileExistsError:
                pass
            st = os.lstat(self.dir)
        except OSError as exc:
            raise StateError(f"cannot create {self.dir}: {exc.strerror or exc}") from None
        if not os.path.isdir(self.dir) or os.path.islink(self.dir) or st.st_uid != os.getuid():
            raise StateError(f"{self.dir} is not a directory of this user: remove it")
        if st.st_mode & 0o077:
            os.chmod(self.dir, DIR_MODE)

    def _entries(self) -> list[tuple[int, str, int, int, str]]:
        """(mtime_ns, run_id, attempt, n, id) of every stored incident, oldest first."""
        try:
            names = os.listdir(self.dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StateError(f"cannot read {self.dir}: {exc.strerror or exc}") from None
        entries = []
        for name in names:
            m = _ID_RE.fullmatch(name[:-5]) if name.endswith(".json") else None
            if not m:
                continue
            try:
                mtime = os.stat(os.path.join(self.dir, name), follow_symlinks=False).st_mtime_ns
            except OSError:
                continue
            entries.append((mtime, m.group(1), int(m.group(2)), int(m.group(3)), name[:-5]))
        return sorted(entries)

    def ids(self) -> list[str]:
        """Stored incident ids, oldest first."""
        return [e[-1] for e in self._entries()]

    def save(self, incident: dict) -> str:
        """Write `incident` atomically (0600), giving it an id unless it has one; prune beyond `keep`."""
        self._ensure_dir()
        incident_id = incident.get("id")
        if not incident_id:
            prefix = (str(incident["run_id"]), int(incident["attempt"]))
            taken = [e[3] for e in self._entries() if (e[1], e[2]) == prefix]
            incident_id = f"{prefix[0]}-{prefix[1]}-{max(taken, default=0) + 1}"
            incident["id"] = incident_id
        payload = (jsonlite.dumps(incident, default=str) + "\n").encode()
        # no fsync: this runs on the way to stopping a stalled attempt, and a lost incident costs nothing else
        write_atomic(self.path_of(incident_id), payload, mode=FILE_MODE, fsync=False)
        self._prune(keep_id=incident_id)
        return incident_id

    def _prune(self, keep_id: str) -> None:
        entries = self._entries()
        for entry in entries[:max(0, len(entries) - self.keep)]:
            if entry[-1] != keep_id:
                try:
                    os.unlink(os.path.join(self.dir, f"{entry[-1]}.json"))
                except FileNotFoundError:
                    pass

    def load(self, incident_id: str) -> dict | None:
        """The incident, None if there is none by that id; StateError if its file is not an incident."""
        path = self.path_of(incident_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "rb") as f:
            raw = f.read(16 * 1024 * 1024)
        try:
            data = jsonlite.loads(raw)
        except ValueError:
            raise StateError(f"{path} is corrupt (not valid JSON)") from None
        if not isinstance(data, dict) or data.get("schema") != INCIDENT_SCHEMA:
            raise StateError(f"{path} is not an hbwrap incident of schema {INCIDENT_SCHEMA}")
        return data

    def find(self, run_id: str | None = None, attempt: int | None = None) -> dict | None:
        """The newest readable incident of that run and/or attempt (any, when both are None)."""
        for entry in reversed(self._entries()):
            if (run_id is None or entry[1] == run_id) and (attempt is None or entry[2] == int(attempt)):
                try:
                    found = self.load(entry[-1])
                except StateError:
                    continue  # a damaged file: show the next one rather than nothing
                if found is not None:
                    return found
        return None

    def latest(self) -> dict | None:
        return self.find()


# --- cost ---------------------------------------------------------------------------------------------

_BENCH_TREE = r'''
import os, signal, socket, sys, time
n = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(64)
port = srv.getsockname()[1]
for i in range(n - 1):
    if os.fork() == 0:
        if i % 5 == 0:  # every fifth holds a loopback TCP connection
            c = socket.create_connection(("127.0.0.1", port))
        while True:
            signal.pause()
conns = []
while len(conns) < (n - 1 + 4) // 5:
    conns.append(srv.accept()[0])
print("READY", flush=True)
while True:
    signal.pause()
'''


def bench_snapshot(n_processes: int = 50, runs: int = 20) -> dict:
    """Time `snapshot` of a tree of `n_processes` (a parent, its children, some TCP connections).

    Returns {"processes", "runs", "median_ms", "max_ms", "cpu_median_ms"} (wall and CPU time of this
    process); for scripts/bench. Starts and kills its own tree.
    """
    import subprocess
    import statistics
    proc = subprocess.Popen([sys.executable, "-c", _BENCH_TREE, str(n_processes)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        if proc.stdout.readline().strip() != b"READY":
            raise RuntimeError("the benchmark tree did not start")
        times, cpu_times, seen = [], [], 0
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            snap = snapshot([proc.pid], now_mono=time.monotonic(), now_wall=time.time())
            times.append((time.perf_counter() - t0) * 1000)
            cpu_times.append((time.process_time() - c0) * 1000)
            seen = len(snap["processes"])
        return {"processes": seen, "runs": runs, "median_ms": round(statistics.median(times), 2),
                "max_ms": round(max(times), 2), "cpu_median_ms": round(statistics.median(cpu_times), 2)}
    finally:
        procs.killpg_quietly(proc.pid, 9)
        proc.wait()
        proc.stdout.close()
