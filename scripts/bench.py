#!/usr/bin/env python3
"""Benchmark hbwrap against the tools it replaces (issue 6).

Contenders: hbwrap (the one next to sys.executable, or $HBWRAP_BIN); GNU `timeout` (the floor for a
wrapper); `cat` / plain redirection (the floor for output handling), with `tee LOG` and a bare keeper
(pipe → rotating log, nothing else) for what storing the output costs by itself; supervisord (the
incumbent Python supervisor, configured in a temporary directory with its own socket, pidfile and logs,
capturing the program's stdout to a log, with autorestart). A contender that is not installed is
reported as skipped.

Scenarios (names for --only): startup, output, binary, idle, detection, kill, memory, scale, takeover.
Each runs several times, contenders alternating; the table shows medians, ratios and PASS/FAIL against
the issue's targets, and the raw figures go to bench-results.json (with the machine's description).

    scripts/bench                  # installs into .bench-venv, then runs this file: full run (< 10 min)
    scripts/bench --quick          # smaller sizes, fewer runs, shorter windows (< 2 min)
    scripts/bench --quick --smoke  # tiny sizes, one run each (seconds; used by the test suite)
    .venv/bin/python scripts/bench.py --only startup,takeover

Every process the benchmark starts carries HBWRAP_BENCH_TAG=<random> in its environment (hbwrap and
supervisord pass their environment on), and is SIGKILLed by that tag after each scenario and on exit,
Ctrl-C and SIGTERM included. Job state lives in a temporary HBWRAP_STATE_DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["startup", "jobmem", "output", "binary", "idle", "detection", "kill", "memory", "scale", "takeover", "selfheal",
             "blocked", "incident", "repeat", "fleet", "approval"]
ALIASES = {
    "start-up": "startup", "output-throughput": "output", "throughput": "output", "text": "output",
    "binary-throughput": "binary", "idle-cost": "idle", "detection-precision": "detection",
    "precision": "detection", "kill-completeness": "kill", "rss": "memory", "peak-rss": "memory",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20
GiB = 1 << 30

# --- settings per mode ------------------------------------------------------------------------------
FULL = dict(
    startup_runs=20, jobmem_runs=5, jobmem_settle=2.0, stream_bytes=GiB, stream_runs=5, idle_window=60.0, idle_jobs=3,
    detection_runs=20, detection_timeout_runs=5, kill_runs=5, kill_timeout_runs=2, kill_procs=50,
    kill_grace=1.0, memory_line=300_000_000, memory_runs=3, memory_hold=1.0, scale_jobs=100,
    scale_window=60.0, takeover_runs=5, selfheal_runs=7, blocked_runs=5, incident_runs=20, repeat_bytes=GiB // 2,
    repeat_runs=3, fleet_runs=5, fleet_window=60.0, approval_runs=7,
)
QUICK = dict(
    FULL, startup_runs=7, jobmem_runs=3, stream_bytes=256 * MiB, stream_runs=3, idle_window=10.0, idle_jobs=2,
    detection_runs=8, detection_timeout_runs=2, kill_runs=3, kill_timeout_runs=1,
    memory_line=100_000_000, memory_runs=1, scale_window=10.0, takeover_runs=3, selfheal_runs=3, blocked_runs=2,
    incident_runs=10, repeat_bytes=128 * MiB, repeat_runs=2, fleet_runs=2, fleet_window=20.0, approval_runs=3,
)
SMOKE = dict(
    FULL, startup_runs=1, jobmem_runs=1, jobmem_settle=0.3, stream_bytes=4 * MiB, stream_runs=1, idle_window=1.0, idle_jobs=1,
    detection_runs=1, detection_timeout_runs=1, kill_runs=1, kill_timeout_runs=1, kill_procs=12,
    kill_grace=0.5, memory_line=2_000_000, memory_runs=1, memory_hold=0.3, scale_jobs=3,
    scale_window=1.0, takeover_runs=1, selfheal_runs=1, blocked_runs=1, incident_runs=2, repeat_bytes=4 * MiB,
    repeat_runs=1, fleet_runs=1, fleet_window=2.0, approval_runs=1,
)

# --- helper programs run as the supervised commands -------------------------------------------------
GEN_PY = r'''
import os, sys
total, kind = int(sys.argv[1]), sys.argv[2]
if kind == "text":  # 100-byte lines, none of them a progress marker
    body = b"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut"
    block = b"".join(b"%08d %s\n" % (i, body[:90]) for i in range(10486))  # ~1 MiB of whole lines
elif kind == "varied":  # ~1 MiB of 10,000 different lines of words: with a 1,000-line window, each is new
    import random
    rng = random.Random(1)
    words = b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    block = b"".join(b"%08d %s\n" % (i, b" ".join(rng.choice(words) for _ in range(14))) for i in range(10000))
else:  # no newline anywhere
    block = bytes(range(11, 256)) * 4280
mv = memoryview(block)
left = total
while left > 0:
    left -= os.write(1, mv[: min(left, len(block))])
'''

HANG_PY = r'''
import os, signal, sys, time
out = sys.argv[1]
def on_term(signum, frame):
    t = time.time()
    with open(out + ".term", "w") as f:
        f.write(repr(t))
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
t = time.time()
os.write(1, b"started %r\n" % t)  # the last sign of life: the deadline is this + the response timeout
with open(out + ".start", "w") as f:
    f.write(repr(t))
while True:
    signal.pause()
'''

# A tree of N processes below the command: kinds cycle through dying on TERM, ignoring it (SIG_IGN),
# catching it (records the time, keeps running), setsid (+ catching), and double-fork orphans
# (reparented to the nearest subreaper) that ignore it. Each appends its pid to PIDS; the root prints a
# line once all are there and then stays silent.
TREE_PY = r'''
import os, signal, sys, time
pids_path, term_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
KINDS = ["default", "ignore", "record", "setsid", "setsid-record", "orphan-ignore", "record", "setsid-ignore"]
def record(signum, frame):
    fd = os.open(term_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"%d %r\n" % (os.getpid(), time.time()))
    os.close(fd)
def note_pid():
    fd = os.open(pids_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"%d\n" % os.getpid())
    os.close(fd)
def become(kind):
    if kind.startswith("setsid"):
        os.setsid()
    if kind.endswith("ignore"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif kind.endswith("record"):
        signal.signal(signal.SIGTERM, record)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
def live(kind, children):
    become(kind)
    note_pid()
    spawn(children)
    while True:
        signal.pause()
def spawn(kinds):
    # kinds: list of (kind, subtree kinds)
    for kind, sub in kinds:
        if kind.startswith("orphan"):
            pid = os.fork()
            if pid == 0:
                if os.fork() == 0:
                    live(kind, sub)
                os._exit(0)
            os.waitpid(pid, 0)
            continue
        if os.fork() == 0:
            live(kind, sub)
signal.signal(signal.SIGTERM, record)
note_pid()
# 5 branches, each a process with (n/5 - 1) children of its own
branches, i = [], 0
per = max(1, n // 5)
while i < n:
    size = min(per, n - i)
    kids = [(KINDS[(i + 1 + j) % len(KINDS)], []) for j in range(size - 1)]
    branches.append((KINDS[i % len(KINDS)], kids))
    i += size
spawn(branches)
deadline = time.time() + 30
while time.time() < deadline:
    try:
        with open(pids_path) as f:
            if len(f.read().split()) >= n + 1:
                break
    except FileNotFoundError:
        pass
    time.sleep(0.005)
os.write(1, b"tree ready\n")
while True:
    signal.pause()
'''

# A bare keeper: what any tool that keeps the command's output in a size-capped log must do at least, read
# the pipe in 1 MiB pieces and write them into a log rotated every 50 MB (hbwrap's default), nothing else.
STORE_PY = r'''
import fcntl, os, sys
log, cap = sys.argv[1], 50 * 1000 * 1000
try:
    fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, 1 << 20)
except OSError:
    pass
fd, size = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600), 0
while True:
    data = os.read(0, 1 << 20)
    if not data:
        break
    if size + len(data) > cap:
        os.close(fd)
        os.replace(log, log + ".1")
        fd, size = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600), 0
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    size += len(data)
'''

BIGLINE_PY = r'''
import os, sys, time
total, hold = int(sys.argv[1]), float(sys.argv[2])
block = b"x" * (1 << 20)
mv = memoryview(block)
left = total
while left > 0:
    left -= os.write(1, mv[: min(left, len(block))])
os.write(1, b"\n")
time.sleep(hold)
'''


# --- small utilities -----------------------------------------------------------------------------------
def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def wait_for(predicate, timeout: float, every: float = 0.01):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            return value
        time.sleep(every)


def proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (clock ticks, from /proc/<pid>/stat)."""
    fields = proc_stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sched_seconds(pid: int) -> float | None:
    """On-CPU time summed over the process's threads, ns-precise (/proc/<pid>/task/*/schedstat)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def status_field(pid: int, key: str) -> int | None:
    """A numeric field of /proc/<pid>/status (kB for the Vm* ones)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields and int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def busy_seconds() -> float | None:
    """CPU time the machine has spent busy in processes (all CPUs; /proc/stat user, nice, system, steal),
    less the part spent by kernel threads (writeback of the logs the scenarios write, for instance)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (fields + [0] * 8)[:8]
    kthreads = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st and (entry == "2" or st[1] == "2"):
                kthreads += int(st[11]) + int(st[12])
    return (user + nice + system + steal - kthreads) / CLK_TCK


def own_seconds() -> float:
    """CPU time of this process and of every process it (or they, transitively) reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def fmt_bytes(n: float) -> str:
    if n >= GiB:
        return f"{n / GiB:g} GiB"
    if n >= MiB:
        return f"{n / MiB:g} MiB"
    return f"{n:g} B"


class Bench:
    def __init__(self, args, settings: dict):
        self.args, self.s = args, settings
        self.hbwrap = self._find_hbwrap()
        self.python = sys.executable
        self.timeout_bin = shutil.which("timeout")
        self.supervisord = self._find_supervisord()
        self.tmp = Path(tempfile.mkdtemp(prefix="hbwrap-bench-"))
        self.state = self.tmp / "state"
        self.state.mkdir(mode=0o700)
        self.tag = "hbwrap-bench-" + uuid.uuid4().hex[:12]
        self.env = dict(os.environ, HBWRAP_STATE_DIR=str(self.state), HBWRAP_BENCH_TAG=self.tag,
                        XDG_CONFIG_HOME=str(self.tmp / "config"), XDG_STATE_HOME=str(self.tmp / "xdg-state"))
        for var in ("HBWRAP_CONFIG", "PYTHONPATH", "PYTHONSTARTUP"):
            self.env.pop(var, None)
        self.procs: list[subprocess.Popen] = []
        self.scripts = {}
        for name, text in (("gen", GEN_PY), ("hang", HANG_PY), ("tree", TREE_PY), ("bigline", BIGLINE_PY),
                           ("store", STORE_PY)):
            path = self.tmp / f"{name}.py"
            path.write_text(text)
            self.scripts[name] = str(path)
        self.rows: list[dict] = []
        self.raw: dict = {}
        self.counter = 0

    # --- locating the contenders ----------------------------------------------------------------------
    @staticmethod
    def _find_hbwrap() -> str:
        candidates = [os.environ.get("HBWRAP_BIN"), str(Path(sys.executable).parent / "hbwrap"), shutil.which("hbwrap")]
        for c in candidates:
            if c and os.access(c, os.X_OK):
                return c
        sys.exit("bench: no hbwrap found next to the interpreter or on PATH (set HBWRAP_BIN)")

    @staticmethod
    def _find_supervisord() -> str | None:
        if os.environ.get("HBWRAP_BENCH_NO_SUPERVISORD"):
            return None
        for c in (str(Path(sys.executable).parent / "supervisord"), shutil.which("supervisord")):
            if c and os.access(c, os.X_OK):
                return c
        return None

    # --- processes ---------------------------------------------------------------------------------------
    def spawn(self, argv, *, stdout=subprocess.DEVNULL, stderr=None, stdin=subprocess.DEVNULL, **kw):
        own = None
        if stderr is None:  # hbwrap's own messages, kept for a look when something goes wrong
            stderr = own = open(self.tmp / "stderr.log", "ab")
        elif isinstance(stderr, (str, Path)):
            stderr = own = open(stderr, "ab")
        try:
            p = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=kw.pop("env", self.env),
                                 cwd=self.tmp, start_new_session=True, **kw)
        finally:
            if own is not None:
                own.close()
        self.procs.append(p)
        return p

    def tagged_pids(self) -> list[int]:
        needle = f"HBWRAP_BENCH_TAG={self.tag}".encode()
        me = os.getpid()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def sweep(self) -> int:
        """SIGKILL every process carrying our tag (until none is left) and reap our own children."""
        killed = set()
        for _ in range(200):
            pids = self.tagged_pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except OSError:
                    pass
            time.sleep(0.01)
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self.procs = [p for p in self.procs if p.returncode is None]
        return len(killed)

    def terminate(self, procs, timeout: float = 10.0) -> None:
        """SIGTERM (hbwrap stops its child group, supervisord its programs), then wait; the sweep does the rest."""
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except OSError:
                    pass
        end = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass

    def cleanup(self) -> None:
        self.sweep()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- hbwrap state -------------------------------------------------------------------------------------
    def job_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def events(self, job: str) -> list[dict]:
        try:
            text = (self.state / job / "events.jsonl").read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def event(self, job: str, name: str) -> dict | None:
        for ev in self.events(job):
            if ev.get("event") == name:
                return ev
        return None

    def keeper_pid(self, job: str) -> int | None:
        return self.keeper_pids([job]).get(job)

    def keeper_pids(self, jobs: list[str]) -> dict[str, int]:
        """job -> keeper pid for all keepers of these jobs alive now (one /proc scan)."""
        targets = {os.fsencode(str(self.state / j)): j for j in jobs}
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"hbwrap.keeper" in argv and alive(int(entry)):
                for a in argv:
                    if a in targets:
                        found[targets[a]] = int(entry)
        return found

    def drop_job(self, job: str) -> None:
        shutil.rmtree(self.state / job, ignore_errors=True)

    # --- supervisord ----------------------------------------------------------------------------------------
    def supervisord_conf(self, programs: dict[str, list[str]]) -> tuple[Path, dict[str, Path]]:
        d = Path(tempfile.mkdtemp(prefix="supd-", dir=self.tmp))
        logs = {}
        parts = [
            "[unix_http_server]", f"file={d}/supervisor.sock", "",
            "[supervisord]", f"logfile={d}/supervisord.log", f"pidfile={d}/supervisord.pid",
            f"childlogdir={d}", "nodaemon=true", "loglevel=warn", f"directory={self.tmp}", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{d}/supervisor.sock", "",
        ]
        for name, argv in programs.items():
            logs[name] = d / f"{name}.out.log"
            parts += [
                f"[program:{name}]", "command=" + " ".join(shlex.quote(a) for a in argv).replace("%", "%%"),
                f"stdout_logfile={logs[name]}", "stdout_logfile_maxbytes=0", f"stderr_logfile={d}/{name}.err.log",
                "stderr_logfile_maxbytes=0", "autostart=true", "autorestart=unexpected", "startsecs=0",
                "startretries=3", "stopwaitsecs=2", "stopasgroup=true", "killasgroup=true", "",
            ]
        conf = d / "supervisord.conf"
        conf.write_text("\n".join(parts))
        return conf, logs

    def start_supervisord(self, programs: dict[str, list[str]]):
        conf, logs = self.supervisord_conf(programs)
        t0 = time.time()
        p = self.spawn([self.supervisord, "-n", "-c", str(conf)],
                       stderr=conf.parent / "supervisord.stderr")
        return p, logs, t0

    # --- rows -----------------------------------------------------------------------------------------------
    def row(self, scenario, contender, metric, unit, values, *, ratio=None, target=None, passed=None,
            skipped=None, note=None, summary=None, spread=True):
        values = [v for v in (values or [])]
        nums = [v for v in values if v is not None]
        r = {
            "scenario": scenario, "contender": contender, "metric": metric, "unit": unit,
            "median": (summary if summary is not None else median(nums)) if nums or summary is not None else None,
            "min": min(nums) if nums and spread else None, "max": max(nums) if nums and spread else None,
            "runs": values, "n": len(nums), "ratio": ratio, "target": target, "pass": passed,
            "skipped": skipped, "note": note,
        }
        self.rows.append(r)
        return r

    def skip_row(self, scenario, contender, metric, why):
        return self.row(scenario, contender, metric, None, [], skipped=why)

    # === scenarios =========================================================================================
    def sc_startup(self):
        """Wall time of `hbwrap run -- true`, `hbwrap beat` and `hbwrap checkpoint` against the interpreter's own
        start (`python3 -c pass`, the venv's) and `timeout 60 true`, interleaved in one batch (issue 16)."""
        inside = self.tmp / "inside"
        inside.mkdir(exist_ok=True)
        env_inside = dict(self.env, HBWRAP_HEARTBEAT_FILE=str(inside / "heartbeat"),
                          HBWRAP_CHECKPOINT_FILE=str(inside / "checkpoint"))
        contenders = {"hbwrap": ([self.hbwrap, "run", "--", "true"], self.env),
                      "beat": ([self.hbwrap, "beat"], env_inside),
                      "checkpoint": ([self.hbwrap, "checkpoint", "page-42"], env_inside),
                      "python3 -c pass": ([self.python, "-c", "pass"], self.env)}
        if self.timeout_bin:
            contenders["timeout"] = ([self.timeout_bin, "60", "true"], self.env)
        times = {k: [] for k in contenders}
        codes = {k: [] for k in contenders}

        def once(argv, env):
            t = time.perf_counter()
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, cwd=self.tmp).returncode
            return time.perf_counter() - t, rc

        for argv, env in contenders.values():  # warm the page cache (and .pyc) once, not measured
            once(argv, env)
        names = list(contenders)
        for i in range(self.s["startup_runs"]):
            order = names[i % len(names):] + names[: i % len(names)]
            for name in order:
                dt, rc = once(*contenders[name])
                times[name].append(dt * 1000)
                codes[name].append(rc)
        py = median(times["python3 -c pass"])

        def lean_row(name, what, factor):
            m, bad = median(times[name]), [c for c in codes[name] if c != 0]
            ratios = [f"×{m / py:.1f} python"]
            if "timeout" in times:
                ratios.append(f"×{m / median(times['timeout']):.0f} timeout")
            self.row("startup", what, "wall time", "ms", times[name], ratio=", ".join(ratios),
                     target=f"≤ {factor} × python ({factor * py:.0f} ms)", passed=m <= factor * py and not bad,
                     note=f"exit codes {sorted(set(bad))}" if bad else None)

        lean_row("hbwrap", "hbwrap run -- true", 6)
        lean_row("beat", "hbwrap beat", 2)
        lean_row("checkpoint", "hbwrap checkpoint page-42", 2)
        if "timeout" in times:
            self.row("startup", "timeout 60 true", "wall time", "ms", times["timeout"])
        else:
            self.skip_row("startup", "timeout 60 true", "wall time", "timeout not found")
        self.row("startup", "python3 -c pass", "wall time", "ms", times["python3 -c pass"],
                 note="the interpreter hbwrap runs on")
        self.raw["startup"] = {"ms": times, "exit_codes": codes, "argv": {k: v[0] for k, v in contenders.items()}}

    def sc_jobmem(self):
        """What one idle supervised job costs (supervisor + keeper, command `sleep`): PSS, alone (issue 16)."""
        both, keeper, sup, details = [], [], [], []
        for _ in range(self.s["jobmem_runs"]):
            job = self.job_name("jobmem")
            p = self.spawn([self.hbwrap, "run", "--name", job, "--", "sleep", "600"])
            if not wait_for(lambda: self.event(job, "attempt_start") and self.keeper_pid(job), timeout=30):
                raise RuntimeError("jobmem: the job did not start")
            time.sleep(self.s["jobmem_settle"])  # its first turns done; what it holds from now on is what counts
            kpid = self.keeper_pid(job)
            s_kb, k_kb = pss_kb(p.pid), pss_kb(kpid)
            details.append({"supervisor_pss_kb": s_kb, "keeper_pss_kb": k_kb,
                            "supervisor_private_kb": status_field(p.pid, "RssAnon"),
                            "keeper_private_kb": status_field(kpid, "RssAnon")})
            if s_kb and k_kb:
                sup.append(s_kb / 1024)
                keeper.append(k_kb / 1024)
                both.append((s_kb + k_kb) / 1024)
            self.terminate([p], timeout=15)
            self.sweep()
            self.drop_job(job)
        b, k = median(both), median(keeper)
        self.row("jobmem", "hbwrap run -- sleep (supervisor + keeper)", "PSS, one idle job", "MB", both, target="≤ 12 MB",
                 passed=b is not None and b <= 12, note=f"supervisor {median(sup):.1f} MB" if sup else None)
        self.row("jobmem", "hbwrap keeper", "PSS, one idle job", "MB", keeper, target="≤ 5 MB", passed=k is not None and k <= 5)
        self.raw["jobmem"] = {"runs": details}

    # --- throughput -------------------------------------------------------------------------------------
    def _run_cat(self, size: int, kind: str, sink: str = "cat") -> float:
        """`gen | cat > /dev/null`; sink "tee": `gen | tee LOG > /dev/null`; "store": `gen | store LOG` (a bare
        keeper, STORE_PY); "file": `gen > LOG` (plain redirection). The last three keep every byte, as hbwrap does."""
        log_path = self.tmp / "sink.log"
        t0 = time.perf_counter()
        if sink == "file":
            with open(log_path, "wb") as out:
                gen = self.spawn([self.python, self.scripts["gen"], str(size), kind], stdout=out)
            gen.wait()
            reader = gen
        else:
            gen = self.spawn([self.python, self.scripts["gen"], str(size), kind], stdout=subprocess.PIPE)
            argv = {"cat": ["cat"], "tee": ["tee", str(log_path)],
                    "store": [self.python, self.scripts["store"], str(log_path)]}[sink]
            reader = self.spawn(argv, stdin=gen.stdout)
            gen.stdout.close()
            gen.wait()
            reader.wait()
        dt = time.perf_counter() - t0
        for path in (log_path, log_path.with_name(log_path.name + ".1")):
            path.unlink(missing_ok=True)
        if gen.returncode or reader.returncode:
            raise RuntimeError(f"gen | {sink} failed: {gen.returncode} {reader.returncode}")
        return dt

    def _run_hbwrap_stream(self, size: int, kind: str, extra: tuple = ()) -> tuple[float, dict]:
        job = self.job_name(f"stream-{kind}")
        t0 = time.perf_counter()
        p = self.spawn([self.hbwrap, "run", "--name", job, *extra, "--", self.python, self.scripts["gen"], str(size),
                        kind])
        p.wait()
        dt = time.perf_counter() - t0
        info = {"exit_code": p.returncode}
        try:
            info["log_bytes"] = sum((self.state / job / n).stat().st_size for n in ("output.log", "output.log.1")
                                    if (self.state / job / n).exists())
        except OSError:
            pass
        self.drop_job(job)
        if p.returncode != 0:
            raise RuntimeError(f"hbwrap run exited {p.returncode}")
        return dt, info

    def _run_supervisord_stream(self, size: int, kind: str) -> float:
        p, logs, t0 = self.start_supervisord({"gen": [self.python, self.scripts["gen"], str(size), kind]})
        log_path = logs["gen"]
        t_start = time.perf_counter()
        done = None
        end = t_start + max(120.0, size / 5e6)
        while time.perf_counter() < end:
            try:
                if log_path.stat().st_size >= size:
                    done = time.perf_counter()
                    break
            except FileNotFoundError:
                pass
            if p.poll() is not None:
                break
            time.sleep(0.005)
        self.terminate([p], timeout=10)
        self.sweep()
        shutil.rmtree(log_path.parent, ignore_errors=True)
        if done is None:
            raise RuntimeError("supervisord's stdout log never reached the full size")
        return done - t_start

    def _stream(self, scenario: str, kind: str, target_ratio: float, with_supervisord: bool):
        size, runs = self.s["stream_bytes"], self.s["stream_runs"]
        contenders = ["hbwrap", "cat", "tee", "store", "file"] + (["supervisord"] if with_supervisord and self.supervisord else [])
        results = {c: [] for c in contenders}
        infos = []
        errors = {}
        # warm-up (the generator and hbwrap's .pyc), then each contender's fixed cost: the same run with
        # 0 bytes, so that the steady-state throughput can be shown beside the end-to-end one
        self._run_cat(8 * MiB, kind)
        self._run_hbwrap_stream(8 * MiB, kind)
        n0 = min(3, runs)
        fixed = {"cat": median([self._run_cat(0, kind) for _ in range(n0)]),
                 "hbwrap": median([self._run_hbwrap_stream(0, kind)[0] for _ in range(n0)])}
        for i in range(runs):
            order = contenders[i % len(contenders):] + contenders[: i % len(contenders)]
            for c in order:
                try:
                    if c == "cat":  # the noisiest contender (pipe throughput depends on CPU placement): 2 runs
                        dt = self._run_cat(size, kind)
                        results[c].append(size / dt / 1e6)
                        dt = self._run_cat(size, kind)
                    elif c in ("tee", "store", "file"):
                        dt = self._run_cat(size, kind, sink=c)
                    elif c == "hbwrap":
                        dt, info = self._run_hbwrap_stream(size, kind)
                        infos.append(info)
                    else:
                        dt = self._run_supervisord_stream(size, kind)
                    results[c].append(size / dt / 1e6)
                except RuntimeError as exc:
                    errors.setdefault(c, []).append(str(exc))
                    results[c].append(None)
        cat = median(results["cat"])
        hb = median(results["hbwrap"])
        what = "text lines" if kind == "text" else "binary"
        label = f"{fmt_bytes(size)} {what}"
        ratio = hb / cat if hb and cat else None

        def steady(c):  # MB/s once started: size / (median wall time - wall time of the same run with 0 bytes)
            m = median(results[c])
            if not m or size < 64 * MiB or size / (m * 1e6) <= fixed[c]:
                return None  # too small a size for the difference to mean anything
            return size / (size / (m * 1e6) - fixed[c]) / 1e6

        st_hb, st_cat = steady("hbwrap"), steady("cat")
        tee, store = median(results["tee"]), median(results["store"])
        detail = f"{ratio:.0%} of cat" if ratio else ""
        if hb and tee:
            detail += f", {hb / tee:.0%} of tee"
        if hb and store:
            detail += f", {hb / store:.0%} of a bare keeper"
        if st_hb and st_cat:
            detail += f"; excl. start-up {st_hb:.0f} MB/s = {st_hb / st_cat:.0%} of cat's {st_cat:.0f}"
        self.row(scenario, "hbwrap run (stdout → /dev/null)", label, "MB/s", results["hbwrap"],
                 ratio=detail or None, target=f"≥ {target_ratio:.0%} of cat",
                 passed=bool(ratio and ratio >= target_ratio), note="; ".join(errors.get("hbwrap", [])) or None)
        cats = [v for v in results["cat"] if v]
        self.row(scenario, "gen | cat > /dev/null", label, "MB/s", results["cat"],
                 note="unstable: a pipe is several times faster when the kernel runs writer and reader on one CPU "
                      "than across CPUs; compare with tee" if cats and max(cats) > 3 * min(cats) else None)
        self.row(scenario, "gen | tee LOG > /dev/null", label, "MB/s", results["tee"],
                 ratio=f"{tee / cat:.0%} of cat" if tee and cat else None,
                 note="stores every byte in a file too, as hbwrap does")
        self.row(scenario, "gen | store LOG (a bare keeper)", label, "MB/s", results["store"],
                 ratio=f"{store / cat:.0%} of cat" if store and cat else None,
                 note="1 MiB read → write into a log rotated every 50 MB, nothing else: hbwrap's keeper "
                      "without its index, supervisor or scan")
        fl = median(results["file"])
        self.row(scenario, "gen > LOG (plain redirection)", label, "MB/s", results["file"],
                 ratio=f"{fl / cat:.0%} of cat" if fl and cat else None, note="one growing file, never rotated")
        if with_supervisord:
            if self.supervisord:
                sv = median(results["supervisord"])
                self.row(scenario, "supervisord (stdout → log)", label, "MB/s", results["supervisord"],
                         ratio=f"{sv / cat:.0%} of cat" if sv and cat else None,
                         note="; ".join(errors.get("supervisord", [])) or "until its stdout log holds every byte")
            else:
                self.skip_row(scenario, "supervisord (stdout → log)", label, "supervisord not installed")
        self.raw[scenario] = {"bytes": size, "MB_per_s": results, "fixed_cost_s": fixed,
                              "steady_MB_per_s": {"hbwrap": st_hb, "cat": st_cat}, "hbwrap_runs": infos,
                              "errors": errors,
                              "definition": "end-to-end: bytes / wall time of the whole invocation (start-up "
                                            "included); steady: bytes / (wall time - wall time with 0 bytes)"}

    def sc_output(self):
        self._stream("output", "text", 0.40, with_supervisord=True)

    def sc_binary(self):
        self._stream("binary", "binary", 0.60, with_supervisord=False)

    # --- idle -------------------------------------------------------------------------------------------
    def sc_idle(self):
        window, k = self.s["idle_window"], self.s["idle_jobs"]
        sleep_for = str(int(window + 600))
        plain = [self.job_name("idle") for _ in range(k)]
        active = [self.job_name("idle-activity") for _ in range(k)]
        jobs = plain + active
        sups = {j: self.spawn([self.hbwrap, "run", "--name", j, "--response-timeout", "1h", "--progress-timeout", "1h",
                               *(("--activity", "cpu,io") if j in active else ()), "--", "sleep", sleep_for])
                for j in jobs}
        others = {}
        if self.timeout_bin:
            others["timeout 1h sleep"] = self.spawn([self.timeout_bin, "1h", "sleep", sleep_for])
        if self.supervisord:
            p, _, _ = self.start_supervisord({"idle": ["sleep", sleep_for]})
            others["supervisord"] = p
        keepers = wait_for(lambda: (lambda d: d if len(d) == 2 * k and all(self.event(j, "attempt_start") for j in jobs)
                                    else None)(self.keeper_pids(jobs)), timeout=60)
        if not keepers:
            raise RuntimeError("idle: not every job started within 60 s")
        if "supervisord" in others:
            wait_for(lambda: children_of(others["supervisord"].pid), timeout=20)
        time.sleep(1.0)  # let start-up finish (first state writes, the first poll)
        pids = {}
        for j in jobs:
            pids[f"{j}/supervisor"] = sups[j].pid
            pids[f"{j}/keeper"] = keepers[j]
        for name, p in others.items():
            pids[name] = p.pid

        def sample():
            return {n: (cpu_seconds(pid), sched_seconds(pid), status_field(pid, "voluntary_ctxt_switches"))
                    for n, pid in pids.items()}

        a = sample()
        time.sleep(window)
        b = sample()
        delta = {}
        for n in pids:
            if a[n][0] is None or b[n][0] is None:
                delta[n] = None
            else:
                delta[n] = {"cpu_s": round(b[n][0] - a[n][0], 4), "sched_s": round((b[n][1] or 0) - (a[n][1] or 0), 6),
                            "wakeups": (b[n][2] or 0) - (a[n][2] or 0)}
        self.terminate(list(sups.values()) + list(others.values()), timeout=15)
        self.sweep()
        per_job, per_job_sched, wakeups, per_active = [], [], [], []
        for j in jobs:
            s, kk = delta.get(f"{j}/supervisor"), delta.get(f"{j}/keeper")
            if j in active:
                per_active.append(None if s is None or kk is None else s["cpu_s"] + kk["cpu_s"])
                continue
            if s is None or kk is None:
                per_job.append(None)
                continue
            per_job.append(s["cpu_s"] + kk["cpu_s"])
            per_job_sched.append(s["sched_s"] + kk["sched_s"])
            wakeups.append(s["wakeups"] + kk["wakeups"])
        target = 0.05 * window / 60
        hb = median(per_job)
        scaled = "" if window == 60 else f" (0.05 s × {window:g}/60)"
        self.row("idle", "hbwrap (supervisor + keeper)", f"CPU over {window:g} s", "s", per_job,
                 ratio=f"schedstat {median(per_job_sched):.4f} s, {median(wakeups):.0f} wakeups" if per_job_sched else None,
                 target=f"≤ {target:.3g} s{scaled}", passed=hb is not None and hb <= target)
        ha = median(per_active)
        # "no worse than without": within the noise of a few milliseconds a minute
        self.row("idle", "hbwrap --activity cpu,io", f"CPU over {window:g} s", "s", per_active,
                 ratio=f"{ha / hb:.0%} of without" if ha is not None and hb else None,
                 target="≤ without + 5 ms", passed=ha is not None and hb is not None and ha <= hb + 0.005)
        for name in ("timeout 1h sleep", "supervisord"):
            if name in others:
                d = delta.get(name)
                self.row("idle", name, f"CPU over {window:g} s", "s", [d["cpu_s"] if d else None],
                         ratio=f"schedstat {d['sched_s']:.4f} s, {d['wakeups']} wakeups" if d else None)
            else:
                self.skip_row("idle", name, f"CPU over {window:g} s",
                              "timeout not found" if name.startswith("timeout") else "supervisord not installed")
        self.raw["idle"] = {"window_s": window, "per_process": delta, "per_job_cpu_s": per_job,
                            "per_job_sched_s": per_job_sched, "per_job_wakeups": wakeups}

    # --- detection precision ----------------------------------------------------------------------------
    def _read_float(self, path: Path) -> float | None:
        try:
            return float(path.read_text())
        except (OSError, ValueError):
            return None

    def sc_detection(self):
        runs, truns = self.s["detection_runs"], self.s["detection_timeout_runs"]
        late_hb, late_ev, late_to, details = [], [], [], []
        for i in range(max(runs, truns)):
            pairs = []
            if i < runs:
                pairs.append("hbwrap")
            if i < truns and self.timeout_bin:
                pairs.append("timeout")
            if i % 2:
                pairs.reverse()
            for c in pairs:
                out = self.tmp / f"det-{self.counter}-{c}"
                self.counter += 1
                if c == "hbwrap":
                    job = self.job_name("detect")
                    p = self.spawn([self.hbwrap, "run", "--name", job, "--response-timeout", "1s", "--grace", "3s",
                                    "--restart", "never", "--", self.python, self.scripts["hang"], str(out)])
                    try:
                        rc = p.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        rc = None
                    start, term = self._read_float(Path(f"{out}.start")), self._read_float(Path(f"{out}.term"))
                    stall, kill = self.event(job, "stall"), self.event(job, "kill")
                    late = (term - (start + 1.0)) * 1000 if start and term else None
                    ev = (parse_iso(kill["ts"]) - (start + 1.0)) * 1000 if kill and start else None
                    late_hb.append(late)
                    late_ev.append(ev)
                    details.append({"run": i, "exit_code": rc, "printed_at": start, "sigterm_at": term,
                                    "stall_ts": stall and stall.get("ts"), "kill_ts": kill and kill.get("ts"),
                                    "late_ms": late, "kill_event_late_ms": ev})
                    self.drop_job(job)
                else:
                    t_launch = time.time()
                    p = self.spawn([self.timeout_bin, "1s", self.python, self.scripts["hang"], str(out)])
                    try:
                        p.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        pass
                    term = self._read_float(Path(f"{out}.term"))
                    late_to.append((term - (t_launch + 1.0)) * 1000 if term else None)
                self.sweep()
        med, mx = median(late_hb), max([v for v in late_hb if v is not None], default=None)
        missing = sum(1 for v in late_hb if v is None)
        self.row("detection", "hbwrap --response-timeout 1s", "SIGTERM after deadline (median)", "ms", late_hb,
                 ratio=f"kill event: {median(late_ev):.1f} ms" if median(late_ev) is not None else None,
                 target="≤ 20 ms", passed=med is not None and med <= 20 and not missing,
                 note=f"{missing} runs without a SIGTERM" if missing else None)
        self.row("detection", "hbwrap --response-timeout 1s", "SIGTERM after deadline (max)", "ms", late_hb,
                 summary=mx, target="≤ 100 ms", passed=mx is not None and mx <= 100 and not missing)
        if self.timeout_bin:
            self.row("detection", "timeout 1s", "SIGTERM after deadline (median)", "ms", late_to,
                     note="deadline = launch + 1 s")
        else:
            self.skip_row("detection", "timeout 1s", "SIGTERM after deadline (median)", "timeout not found")
        self.raw["detection"] = {"hbwrap_late_ms": late_hb, "hbwrap_kill_event_late_ms": late_ev,
                                 "timeout_late_ms": late_to, "hbwrap_runs": details,
                                 "definition": "time the command's SIGTERM handler ran minus (time it printed its "
                                               "last line + 1 s)"}

    # --- kill completeness --------------------------------------------------------------------------------
    def _watch_tree(self, pids_path: Path, n: int, started: subprocess.Popen, give_up_after: float):
        """Wait for the tree to be complete, then for each pid to die; returns (pids, {pid: death time})."""
        def ready():
            try:
                pids = [int(x) for x in pids_path.read_text().split()]
            except (OSError, ValueError):
                return None
            return pids if len(pids) >= n + 1 else None

        pids = wait_for(ready, timeout=30, every=0.005)
        if not pids:
            raise RuntimeError(f"the process tree never got to {n + 1} processes")
        deaths: dict[int, float] = {}
        poller = select.poll()
        fds = {}
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                deaths[pid] = time.time()
                continue
            except (OSError, AttributeError):
                fd = None
            if fd is not None:
                fds[fd] = pid
                poller.register(fd, select.POLLIN)
        end = time.monotonic() + give_up_after
        while fds and time.monotonic() < end:
            for fd, _ in poller.poll(50):
                t = time.time()
                deaths[fds[fd]] = t
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
        for fd in fds:
            os.close(fd)
        return pids, deaths

    def _term_times(self, path: Path) -> list[float]:
        try:
            return [float(line.split()[1]) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError, IndexError):
            return []

    def sc_kill(self):
        n, grace = self.s["kill_procs"], self.s["kill_grace"]
        runs, truns = self.s["kill_runs"], self.s["kill_timeout_runs"]
        hb_times, hb_left, to_times, to_left, details = [], [], [], [], []
        for i in range(max(runs, truns)):
            pairs = (["hbwrap"] if i < runs else []) + (["timeout"] if i < truns and self.timeout_bin else [])
            if i % 2:
                pairs.reverse()
            for c in pairs:
                base = self.tmp / f"tree-{self.counter}"
                self.counter += 1
                pids_path, term_path = Path(f"{base}.pids"), Path(f"{base}.term")
                tree = [self.python, self.scripts["tree"], str(pids_path), str(term_path), str(n)]
                job = None
                if c == "hbwrap":
                    job = self.job_name("kill")
                    p = self.spawn([self.hbwrap, "run", "--name", job, "--response-timeout", "1s", "--grace",
                                    f"{grace:g}s", "--restart", "never", "--", *tree])
                else:
                    p = self.spawn([self.timeout_bin, "-k", f"{grace:g}s", "1s", *tree])
                pids, deaths = self._watch_tree(pids_path, n, p, give_up_after=30 if c == "hbwrap" else 1 + grace + 1)
                terms = self._term_times(term_path)
                kill_ev = self.event(job, "kill") if job else None
                kill_start = min(terms) if terms else (parse_iso(kill_ev["ts"]) if kill_ev else None)
                survivors = [pid for pid in pids if pid not in deaths]
                gone = max(deaths.values()) - kill_start if deaths and kill_start and not survivors else None
                try:
                    rc = p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    rc = None
                (hb_times if c == "hbwrap" else to_times).append(gone)
                (hb_left if c == "hbwrap" else to_left).append(len(survivors))
                details.append({"contender": c, "run": i, "processes": len(pids), "survivors": len(survivors),
                                "kill_start": kill_start, "kill_event_ts": kill_ev and kill_ev.get("ts"),
                                "all_gone_after_s": gone, "exit_code": rc})
                if job:
                    self.drop_job(job)
                self.sweep()
        limit = grace + 0.1
        mx = max([v for v in hb_times if v is not None], default=None)
        left = max(hb_left, default=0)
        self.row("kill", f"hbwrap --grace {grace:g}s", f"all {n + 1} gone after kill starts", "s", hb_times,
                 ratio=f"max {mx:.3f} s" if mx is not None else None, target=f"≤ {limit:g} s (max)",
                 passed=mx is not None and mx <= limit and left == 0 and None not in hb_times,
                 note=f"{left} processes survived" if left else None)
        if self.timeout_bin:
            gone = median(to_times)
            self.row("kill", f"timeout -k {grace:g}s", f"processes of {n + 1} left at grace + 1 s", "procs",
                     to_left, note=(f"all gone after {gone:.3f} s" if gone is not None else
                                    "the setsid and orphaned ones escape its process-group kill"))
        else:
            self.skip_row("kill", f"timeout -k {grace:g}s", "all gone after kill starts", "timeout not found")
        self.raw["kill"] = {"grace_s": grace, "processes": n + 1, "hbwrap_all_gone_s": hb_times,
                            "hbwrap_survivors": hb_left, "timeout_all_gone_s": to_times,
                            "timeout_survivors": to_left, "runs": details}

    # --- memory ---------------------------------------------------------------------------------------------
    def sc_memory(self):
        size, hold, runs = self.s["memory_line"], self.s["memory_hold"], self.s["memory_runs"]
        sup_mb, keep_mb, sv_mb, details = [], [], [], []
        argv = [self.python, self.scripts["bigline"], str(size), str(hold)]
        contenders = ["hbwrap"] + (["supervisord"] if self.supervisord else [])
        for i in range(runs):
            for c in (contenders if i % 2 == 0 else contenders[::-1]):
                if c == "hbwrap":
                    job = self.job_name("memory")
                    p = self.spawn([self.hbwrap, "run", "--name", job, "--", *argv])
                    kpid, hwm_s, hwm_k = None, 0, 0
                    end = time.monotonic() + 120
                    while p.poll() is None and time.monotonic() < end:
                        if kpid is None:
                            kpid = self.keeper_pid(job)
                        hwm_s = max(hwm_s, status_field(p.pid, "VmHWM") or 0)
                        if kpid:
                            hwm_k = max(hwm_k, status_field(kpid, "VmHWM") or 0)
                        time.sleep(0.02)
                    rc = p.wait(timeout=10) if p.poll() is None else p.returncode
                    sup_mb.append(hwm_s / 1024 if hwm_s else None)
                    keep_mb.append(hwm_k / 1024 if hwm_k else None)
                    details.append({"contender": c, "exit_code": rc, "supervisor_hwm_kb": hwm_s,
                                    "keeper_hwm_kb": hwm_k})
                    self.drop_job(job)
                else:
                    p, logs, _ = self.start_supervisord({"bigline": argv})
                    hwm = 0
                    end = time.monotonic() + 120
                    while time.monotonic() < end and p.poll() is None:
                        hwm = max(hwm, status_field(p.pid, "VmHWM") or 0)
                        try:
                            if logs["bigline"].stat().st_size >= size + 1:
                                break
                        except FileNotFoundError:
                            pass
                        time.sleep(0.02)
                    hwm = max(hwm, status_field(p.pid, "VmHWM") or 0)
                    sv_mb.append(hwm / 1024 if hwm else None)
                    details.append({"contender": c, "supervisord_hwm_kb": hwm})
                    self.terminate([p], timeout=10)
                self.sweep()
        line = f"{size / 1e6:g} MB line"
        s, k = median(sup_mb), median(keep_mb)
        self.row("memory", "hbwrap supervisor", f"peak RSS, {line}", "MB", sup_mb, target="≤ 35 MB",
                 passed=s is not None and s <= 35)
        self.row("memory", "hbwrap keeper", f"peak RSS, {line}", "MB", keep_mb, target="≤ 20 MB",
                 passed=k is not None and k <= 20)
        if self.supervisord:
            self.row("memory", "supervisord", f"peak RSS, {line}", "MB", sv_mb)
        else:
            self.skip_row("memory", "supervisord", f"peak RSS, {line}", "supervisord not installed")
        self.raw["memory"] = {"line_bytes": size, "supervisor_hwm_mb": sup_mb, "keeper_hwm_mb": keep_mb,
                              "supervisord_hwm_mb": sv_mb, "runs": details}

    # --- scale ----------------------------------------------------------------------------------------------
    def sc_scale(self):
        k, window = self.s["scale_jobs"], self.s["scale_window"]
        sleep_for = str(int(window + 900))
        sv = None
        if self.supervisord:  # one supervisord with the same number of programs, measured over the same window
            sv, _, _ = self.start_supervisord({f"s{i}": ["sleep", sleep_for] for i in range(k)})
        jobs = [self.job_name("scale") for _ in range(k)]
        t_launch = time.monotonic()
        sups = {j: self.spawn([self.hbwrap, "run", "--name", j, "--response-timeout", "1h", "--progress-timeout", "1h",
                               "--", "sleep", sleep_for]) for j in jobs}
        keepers = {}

        def all_up():
            keepers.update(self.keeper_pids(jobs))
            return len(keepers) == k and all(self.event(j, "attempt_start") for j in jobs)

        ok = wait_for(all_up, timeout=180, every=0.1)
        startup_s = time.monotonic() - t_launch
        if not ok:
            raise RuntimeError(f"scale: only {len(keepers)} of {k} jobs started within 180 s")
        if sv is not None:
            wait_for(lambda: len(children_of(sv.pid)) >= k, timeout=60, every=0.1)
        time.sleep(1.0)
        pids = [p.pid for p in sups.values()] + list(keepers.values())

        def total(fn, which):
            vals = [fn(pid) for pid in which]
            return sum(v for v in vals if v is not None), sum(1 for v in vals if v is None)

        cpu_startup, _ = total(cpu_seconds, pids)
        a_cpu, _ = total(cpu_seconds, pids)
        a_sched, _ = total(sched_seconds, pids)
        sv_a = (cpu_seconds(sv.pid), sched_seconds(sv.pid)) if sv else None
        time.sleep(window)
        b_cpu, lost = total(cpu_seconds, pids)
        b_sched, _ = total(sched_seconds, pids)
        rss_kb, _ = total(lambda pid: status_field(pid, "VmRSS"), pids)
        pss, _ = total(pss_kb, pids)
        sup_rss, _ = total(lambda pid: status_field(pid, "VmRSS"), [p.pid for p in sups.values()])
        sv_b = (cpu_seconds(sv.pid), sched_seconds(sv.pid)) if sv else None
        sv_rss = status_field(sv.pid, "VmRSS") if sv else None
        self.terminate(list(sups.values()) + ([sv] if sv else []), timeout=30)
        self.sweep()
        for j in jobs:
            self.drop_job(j)
        cpu = b_cpu - a_cpu
        target = 2.0 * window / 60
        scaled = "" if window == 60 else f" (2 s × {window:g}/60)"
        self.row("scale", f"hbwrap × {k} (supervisors + keepers)", f"CPU over {window:g} s", "s", [cpu],
                 ratio=f"schedstat {b_sched - a_sched:.3f} s", target=f"≤ {target:.3g} s{scaled}",
                 passed=cpu <= target and not lost, spread=False,
                 note=f"{lost} processes vanished mid-window" if lost else
                 f"start-up of all {k}: {startup_s:.1f} s wall, {cpu_startup:.1f} s CPU")
        self.row("scale", f"hbwrap × {k} (supervisors + keepers)", "total PSS", "MB", [pss / 1024],
                 ratio=f"RSS {rss_kb / 1024:.0f} MB", spread=False, target=f"≤ {10 * k} MB (10 MB a job)",
                 passed=pss / 1024 <= 10 * k and not lost,
                 note=f"RSS: supervisors {sup_rss / 1024:.0f} MB, keepers {(rss_kb - sup_rss) / 1024:.0f} MB")
        if sv is not None and sv_a and sv_b and sv_a[0] is not None and sv_b[0] is not None:
            self.row("scale", f"supervisord × {k} programs", f"CPU over {window:g} s", "s", [sv_b[0] - sv_a[0]],
                     ratio=f"schedstat {(sv_b[1] or 0) - (sv_a[1] or 0):.3f} s", spread=False)
            self.row("scale", f"supervisord × {k} programs", "total RSS", "MB",
                     [sv_rss / 1024 if sv_rss else None], spread=False)
        else:
            self.skip_row("scale", f"supervisord × {k} programs", f"CPU over {window:g} s",
                          "supervisord not installed" if not self.supervisord else "supervisord died")
        self.raw["scale"] = {"jobs": k, "window_s": window, "startup_wall_s": startup_s,
                             "startup_cpu_s": cpu_startup, "window_cpu_s": cpu, "window_sched_s": b_sched - a_sched,
                             "rss_kb": rss_kb, "pss_kb": pss, "supervisors_rss_kb": sup_rss,
                             "supervisord": {"cpu_s": (sv_b[0] - sv_a[0]) if sv_a and sv_b and sv_a[0] is not None
                                             and sv_b[0] is not None else None, "rss_kb": sv_rss}}

    # --- takeover ----------------------------------------------------------------------------------------
    def sc_takeover(self):
        lat, details = [], []
        for i in range(self.s["takeover_runs"]):
            job = self.job_name("takeover")
            p = self.spawn([self.hbwrap, "run", "--name", job, "--response-timeout", "1h", "--no-self-heal", "--",
                            "sleep", "600"])
            ok = wait_for(lambda: self.event(job, "attempt_start") and self.keeper_pid(job), timeout=30)
            if not ok:
                raise RuntimeError("takeover: the job never started")
            time.sleep(0.3)
            p.kill()
            p.wait()
            t0 = time.time()
            w = self.spawn([self.hbwrap, "watch", job])
            ev = wait_for(lambda: self.event(job, "takeover"), timeout=15, every=0.005)
            rc_early = w.poll()
            latency = (parse_iso(ev["ts"]) - t0) * 1000 if ev else None
            lat.append(latency)
            details.append({"run": i, "latency_ms": latency, "takeover_ts": ev and ev.get("ts"), "watch_started": t0,
                            "watch_exit_code_if_exited": rc_early})
            self.terminate([w], timeout=15)
            self.sweep()
            self.drop_job(job)
        m = median(lat)
        self.row("takeover", "hbwrap watch", "takeover event after watch starts", "ms", lat, target="≤ 300 ms",
                 passed=m is not None and m <= 300 and None not in lat)
        self.raw["takeover"] = {"latency_ms": lat, "runs": details}

    def sc_selfheal(self):
        """SIGKILL of the supervisor, nobody else helping: time until its keeper's replacement took over."""
        lat, details = [], []
        for i in range(self.s["selfheal_runs"]):
            job = self.job_name("selfheal")
            p = self.spawn([self.hbwrap, "run", "--name", job, "--response-timeout", "1h", "--", "sleep", "600"])
            if not wait_for(lambda: self.event(job, "attempt_start") and self.keeper_pid(job), timeout=30):
                raise RuntimeError("selfheal: the job never started")
            time.sleep(0.3)
            t0 = time.time()
            p.kill()
            p.wait()
            ev = wait_for(lambda: self.event(job, "takeover"), timeout=15, every=0.005)
            latency = (parse_iso(ev["ts"]) - t0) * 1000 if ev else None
            lat.append(latency)
            details.append({"run": i, "latency_ms": latency, "by": ev and ev.get("by")})
            self.stop_job(job)
        m = median(lat)
        self.row("selfheal", "hbwrap keeper", "SIGKILL of the supervisor → takeover by its keeper", "ms", lat,
                 target="≤ 1000 ms", passed=m is not None and m <= 1000 and None not in lat,
                 note="includes the keeper's 0.5 s wait for a takeover already on its way")
        self.raw["selfheal"] = {"latency_ms": lat, "runs": details}

    def sc_blocked(self):
        """Nobody reads hbwrap's stdout (`| sleep 600`): how late --timeout 2s still fires."""
        late, details = [], []
        for i in range(self.s["blocked_runs"]):
            job = self.job_name("blocked")
            read_end, write_end = os.pipe()
            try:
                gen = [sys.executable, str(self.tmp / "gen.py"), str(8 * MiB), "binary"]
                p = self.spawn([self.hbwrap, "run", "--name", job, "--timeout", "2s", "--grace", "0.2s",
                                "--restart", "never", "--", "sh", "-c", '"$@"; sleep 600', "sh", *gen],
                               stdout=write_end)
                os.close(write_end)
                stall = wait_for(lambda: self.event(job, "stall"), timeout=30, every=0.005)
                start = self.event(job, "attempt_start")
                lateness = ((parse_iso(stall["ts"]) - parse_iso(start["ts"]) - 2.0) * 1000
                            if stall and start else None)
                late.append(lateness)
                details.append({"run": i, "lateness_ms": lateness})
            finally:
                os.close(read_end)
            self.terminate([p], timeout=15)
            self.sweep()
            self.drop_job(job)
        m = median(late)
        self.row("blocked", "hbwrap run | (blocked reader)", "--timeout 2s fires late by", "ms", late,
                 target="≤ 100 ms", passed=m is not None and m <= 100 and None not in late)
        self.raw["blocked"] = {"lateness_ms": late, "runs": details}

    def sc_incident(self):
        """What an incident costs: a snapshot of a 50-process tree (tree, states, sockets, CPU shares)."""
        from hbwrap.incident import bench_snapshot

        got = bench_snapshot(50, self.s["incident_runs"])
        self.row("incident", "hbwrap incident snapshot", f"{got['processes']}-process tree", "ms", [got["median_ms"]],
                 ratio=f"max {got['max_ms']} ms, CPU {got['cpu_median_ms']} ms", target="≤ 50 ms",
                 passed=got["median_ms"] <= 50 and got["processes"] >= 50, spread=False)
        self.raw["incident"] = got

    def sc_repeat(self):
        """Text throughput with --repeat-timeout (every line goes through the repetition window) and without:
        on the looping text (numbered lines, the target) and on lines that never repeat (reported)."""
        size = self.s["repeat_bytes"]
        self._run_hbwrap_stream(8 * MiB, "text", ("--repeat-timeout", "1h"))  # warm-up
        self.raw["repeat"] = {"bytes": size}
        for kind, what, key in (("text", "text lines", "MB_per_s"), ("varied", "lines never repeated",
                                                                      "varied_MB_per_s")):
            plain, repeat = [], []
            for _ in range(self.s["repeat_runs"]):
                plain.append(size / self._run_hbwrap_stream(size, kind)[0] / 1e6)
                repeat.append(size / self._run_hbwrap_stream(size, kind, ("--repeat-timeout", "1h"))[0] / 1e6)
            p, r = median(plain), median(repeat)
            label = f"{fmt_bytes(size)} {what}"
            ratio = f"{r / p:.0%} of without" if p and r else None
            if kind == "text":
                self.row("repeat", "hbwrap run --repeat-timeout 1h", label, "MB/s", repeat, ratio=ratio,
                         target="≥ 60% of without", passed=bool(p and r and r >= 0.6 * p))
            else:  # every chunk's lines must be looked at as new
                self.row("repeat", "hbwrap run --repeat-timeout 1h", label, "MB/s", repeat, ratio=ratio,
                         note="reported, no target")
            self.row("repeat", "hbwrap run (without)", label, "MB/s", plain)
            self.raw["repeat"][key] = {"with": repeat, "without": plain}

    def sc_fleet(self):
        """--lease-url against PostgreSQL: takeover after a host's death, the database's load, start-up."""
        url = os.environ.get("HBWRAP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
        try:
            import psycopg

            psycopg.connect(url, connect_timeout=3).close()
        except Exception as exc:  # no server, or no psycopg in the bench venv: say so, measure the rest
            why = f"no PostgreSQL ({type(exc).__name__})"
            for metric in ("takeover after host death", "statements per job and minute", "start-up"):
                self.skip_row("fleet", "hbwrap --lease-url", metric, why)
            return
        schema = f"hbwrap_bench_{os.getpid()}"
        lease_url = f"{url}{'&' if '?' in url else '?'}hbwrap_schema={schema}"
        try:
            self._fleet_takeover(lease_url)
            self._fleet_load(url, lease_url, schema)
            self._fleet_startup(lease_url)
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def _fleet_env(self, host: str) -> dict:
        return dict(self.env, HBWRAP_STATE_DIR=str(self.tmp / f"state-{host}"))

    def _fleet_takeover(self, lease_url: str) -> None:
        lat = []
        for i in range(self.s["fleet_runs"]):
            job = self.job_name("fleet")
            common = ["--name", job, "--lease-url", lease_url, "--lease", "3s", "--response-timeout", "1h"]
            a = self.spawn([self.hbwrap, "run", *common, "--host", "a", "--no-self-heal", "--", "sleep", "600"],
                           env=self._fleet_env("a"))
            state = self.tmp / "state-a" / job / "state.json"
            if not wait_for(lambda: state.exists() and json.loads(state.read_text()).get("child_pid"), timeout=30):
                raise RuntimeError("fleet: host a never started the command")
            st = json.loads(state.read_text())
            b = self.spawn([self.hbwrap, "run", *common, "--host", "b", "--if-running", "wait", "--",
                            "sleep", "600"], env=self._fleet_env("b"))
            time.sleep(0.5)
            for pid in (st["supervisor_pid"], st["keeper_pid"]):
                os.kill(pid, signal.SIGKILL)
            os.killpg(st["child_pid"], signal.SIGKILL)  # the host dies: all of it at once
            expiry = self._expires_at(lease_url, job)  # the database's clock (this machine's: a local server)
            started = self.tmp / "state-b" / job / "events.jsonl"
            ev = wait_for(lambda: next((json.loads(line) for line in (started.read_text().splitlines()
                                        if started.exists() else []) if '"attempt_start"' in line), None),
                          timeout=30, every=0.01)
            lat.append((parse_iso(ev["ts"]) - expiry) * 1000 if ev and expiry else None)
            self.terminate([a, b], timeout=15)
            self.sweep()
        m = median(lat)
        self.row("fleet", "hbwrap --lease-url (2 hosts)", "takeover after host death: lease expiry → new attempt",
                 "ms", lat, target="≤ 1000 ms", passed=m is not None and m <= 1000 and None not in lat,
                 note="from the row's expires_at (the database server's clock) to the next holder's attempt_start; "
                      "that holder waits with --if-running wait")

    def _expires_at(self, lease_url: str, job: str) -> float | None:
        out = subprocess.run([self.hbwrap, "status", "--fleet", "--lease-url", lease_url, "--json", job],
                             capture_output=True, text=True, env=self.env, timeout=30)
        try:
            return parse_iso(json.loads(out.stdout)[0]["expires_at"])
        except (ValueError, IndexError, KeyError):
            return None

    def _fleet_load(self, url: str, lease_url: str, schema: str) -> None:
        import psycopg

        window = self.s["fleet_window"]
        job = self.job_name("fleet-load")
        p = self.spawn([self.hbwrap, "run", "--name", job, "--lease-url", lease_url, "--response-timeout", "1h",
                        "--", "sleep", "600"], env=self._fleet_env("load"))
        state = self.tmp / "state-load" / job / "state.json"
        wait_for(lambda: state.exists() and json.loads(state.read_text()).get("child_pid"), timeout=30)

        conn = psycopg.connect(url, autocommit=True)

        def updates() -> int:
            row = conn.execute("SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables WHERE schemaname = %s "
                               "AND relname = 'hbwrap_leases'", (schema,)).fetchone()
            return int(row[0]) if row else 0
        # the rate between the first and the last write seen in the window: a count over a fixed window of
        # a 10 s cadence is 6 or 7 a minute depending on where the window starts
        seen: list[tuple[float, int]] = []
        last = updates()
        end = time.monotonic() + window + 0.6  # (+ the statistics collector's delay)
        while time.monotonic() < end:
            time.sleep(0.25)
            now_count = updates()
            if now_count != last:
                seen.append((time.monotonic(), now_count - last))
                last = now_count
        if len(seen) >= 2:
            per_min = sum(n for _, n in seen[1:]) * 60.0 / (seen[-1][0] - seen[0][0])
        else:
            per_min = sum(n for _, n in seen) * 60.0 / window
        conn.close()
        self.terminate([p], timeout=15)
        self.sweep()
        self.row("fleet", "hbwrap --lease-url (default 30 s lease)", "statements per job and minute", "/min",
                 [per_min], target="≤ 6", passed=per_min <= 6.5, spread=False,
                 note="renewals (a checkpoint rides along); plus an acquire and a release per run")

    def _fleet_startup(self, lease_url: str) -> None:
        runs = max(3, self.s["startup_runs"] // 2)
        plain, shared = [], []
        for _ in range(runs):
            for target, extra in ((plain, []), (shared, ["--lease-url", lease_url])):
                t0 = time.perf_counter()
                p = self.spawn([self.hbwrap, "run", "--name", self.job_name("fleet-start"), *extra, "--", "true"])
                p.wait()
                target.append((time.perf_counter() - t0) * 1000)
        self.row("fleet", "hbwrap run -- true", "start-up, without --lease-url", "ms", plain)
        self.row("fleet", "hbwrap run --lease-url URL -- true", "start-up, with --lease-url", "ms", shared,
                 ratio=f"+{median(shared) - median(plain):.0f} ms (psycopg, connect, acquire, release)")

    def sc_approval(self):
        """--restart-approval: time from `hbwrap approve` to the start of the next attempt."""
        lat, details = [], []
        script = 'if [ -n "$HBWRAP_RESUME_FROM" ]; then exec sleep 600; fi; echo checkpoint: one; exec sleep 600'
        for i in range(self.s["approval_runs"]):
            job = self.job_name("approval")
            p = self.spawn([self.hbwrap, "run", "--name", job, "--response-timeout", "0.3s", "--grace", "0.2s",
                            "--backoff", "0.1s", "--restart-approval", "10m", "--", "sh", "-c", script])
            if not wait_for(lambda: self.event(job, "restart_pending"), timeout=30):
                raise RuntimeError("approval: no restart_pending")
            time.sleep(0.3)  # past the back-off, so the figure is the answer's alone
            t0 = time.time()
            subprocess.run([self.hbwrap, "approve", job], env=self.env, cwd=self.tmp, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            second = wait_for(lambda: [e for e in self.events(job) if e.get("event") == "attempt_start"][1:],
                              timeout=15, every=0.005)
            latency = (parse_iso(second[0]["ts"]) - t0) * 1000 if second else None
            lat.append(latency)
            details.append({"run": i, "latency_ms": latency})
            self.terminate([p], timeout=15)
            self.sweep()
            self.drop_job(job)
        m = median(lat)
        self.row("approval", "hbwrap approve", "approve → next attempt started", "ms", lat,
                 target="≤ 1000 ms", passed=m is not None and m <= 1000 and None not in lat,
                 note="includes the approve command's own start-up")
        self.raw["approval"] = {"latency_ms": lat, "runs": details}

    def stop_job(self, job: str) -> None:
        subprocess.run([self.hbwrap, "stop", job, "--timeout", "15s"], env=self.env, cwd=self.tmp,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        self.sweep()
        self.drop_job(job)


# --- machine description -------------------------------------------------------------------------------
def machine_info(b: Bench) -> dict:
    def first(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=b.env, cwd=b.tmp)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None

    model = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    git = first(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = first(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "cpu_model": model,
        "kernel": platform.release(), "os": platform.platform(), "memory_bytes": mem,
        "python": sys.version.split()[0], "python_executable": sys.executable, "hbwrap": b.hbwrap,
        "hbwrap_version": first([b.hbwrap, "--version"]),
        "timeout_version": first([b.timeout_bin, "--version"]) if b.timeout_bin else None,
        "supervisord_version": first([b.supervisord, "--version"]) if b.supervisord else None,
        "git_commit": (git + ("-dirty" if dirty else "")) if git else None,
    }


# --- report ----------------------------------------------------------------------------------------------
def fmt_value(v, unit) -> str:
    if v is None:
        return "—"
    if unit == "ms":
        return f"{v:.1f} ms"
    if unit == "s":
        return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"
    if unit == "MB/s":
        return f"{v:.0f} MB/s"
    if unit == "MB":
        return f"{v:.1f} MB"
    if unit == "procs":
        return f"{v:g}"
    return f"{v:g} {unit or ''}".strip()


def print_table(rows: list[dict], machine: dict, mode: str, elapsed: float) -> None:
    title = (f"hbwrap benchmark ({mode}) — {machine.get('nproc')} × {machine.get('cpu_model')}, "
             f"Linux {machine.get('kernel')}, Python {machine.get('python')}, {elapsed:.0f} s")
    headers = ["scenario", "contender", "measure", "median", "runs", "min – max", "ratio / detail", "target", "result"]
    table_rows = []
    for r in rows:
        if r["skipped"]:
            result = "skipped"
        elif r["pass"] is None:
            result = ""
        else:
            result = "PASS" if r["pass"] else "FAIL"
        spread = (f"{fmt_value(r['min'], r['unit'])} – {fmt_value(r['max'], r['unit'])}"
                  if r["min"] is not None and r["n"] > 1 else "")
        detail = r["ratio"] or ""
        if r["skipped"]:
            detail = r["skipped"]
        elif r["note"]:
            detail = f"{detail}; {r['note']}" if detail else r["note"]
        table_rows.append([r["scenario"], r["contender"], r["metric"], fmt_value(r["median"], r["unit"])
                           if not r["skipped"] else "—", str(r["n"]), spread, detail, r["target"] or "", result])
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(h), *(len(row[i]) for row in table_rows)) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
        for row in table_rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        return
    table = Table(title=title, show_lines=False)
    for h in headers:
        table.add_column(h, overflow="fold", justify="right" if h in ("median", "runs") else "left")
    previous = None
    for row in table_rows:
        style = {"PASS": "green", "FAIL": "bold red", "skipped": "dim"}.get(row[-1])
        cells = list(row)
        if style:
            cells[-1] = f"[{style}]{row[-1]}[/{style}]"
        if row[0] == previous:
            cells[0] = ""
        else:
            if previous is not None:
                table.add_section()
            previous = row[0]
        table.add_row(*cells)
    width = int(os.environ.get("COLUMNS", "0") or 0) or 200
    Console(width=max(width, 160)).print(table)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="scenarios: " + ", ".join(SCENARIOS))
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs, shorter windows (< 2 min)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one run each (seconds; for the test suite)")
    ap.add_argument("--only", metavar="NAME[,NAME]", help="run only these scenarios")
    ap.add_argument("--output", metavar="FILE", default=str(ROOT / "bench-results.json"),
                    help="where to write the raw figures (default: bench-results.json in the repo root)")
    args = ap.parse_args(argv)
    chosen = SCENARIOS
    if args.only:
        chosen = []
        for name in args.only.split(","):
            name = ALIASES.get(name.strip().lower(), name.strip().lower())
            if name not in SCENARIOS:
                ap.error(f"--only: unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
            if name not in chosen:
                chosen.append(name)
        chosen = [s for s in SCENARIOS if s in chosen]
    args.scenarios = chosen
    return args


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = SMOKE if args.smoke else QUICK if args.quick else FULL
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too: even when started with it ignored
        signal.signal(sig, _interrupted)
    bench = Bench(args, settings)
    started = time.monotonic()
    timings, loads, errors = {}, {}, {}
    try:
        machine = machine_info(bench)
        log(f"{mode} run of {', '.join(args.scenarios)} with {bench.hbwrap}; state in {bench.state}")
        if not bench.supervisord:
            log("supervisord not found: its rows are reported as skipped")
        for name in args.scenarios:
            t = time.monotonic()
            busy0, own0 = busy_seconds(), own_seconds()
            log(f"{name} …")
            n_rows = len(bench.rows)
            try:
                getattr(bench, f"sc_{name}")()
            except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                log(f"{name} failed: {errors[name]}")
                del bench.rows[n_rows:]
                bench.row(name, "hbwrap", "error", None, [], note=errors[name], passed=False)
            finally:
                bench.sweep()
            timings[name] = round(time.monotonic() - t, 2)
            busy1 = busy_seconds()
            if busy0 is not None and busy1 is not None:
                # busy CPU time not spent by the benchmark's own processes (nor reaped descendants) nor by
                # kernel threads: other work on the machine, which makes the timings less reliable
                other = max(0.0, (busy1 - busy0) - (own_seconds() - own0))
                ncpu = os.cpu_count() or 1
                loads[name] = round(other / (time.monotonic() - t) / ncpu, 3)
            log(f"{name} done in {timings[name]:.1f} s")
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        bench.cleanup()
        return 130
    finally:
        bench.cleanup()
    elapsed = time.monotonic() - started
    doc = {
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": mode, "scenarios": args.scenarios, "settings": settings, "elapsed_s": round(elapsed, 1),
        "scenario_seconds": timings, "other_cpu_share": loads, "machine": machine, "rows": bench.rows, "raw": bench.raw, "errors": errors,
    }
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out)
    print_table(bench.rows, machine, mode, elapsed)
    busy = {k: v for k, v in loads.items() if v > 0.1}
    if busy:
        print("warning: other work kept the machine busy during "
              + ", ".join(f"{k} ({v:.0%} of its CPU time)" for k, v in busy.items())
              + ": timings of those scenarios are less reliable")
    failed = [f"{r['scenario']}/{r['contender']}/{r['metric']}" for r in bench.rows if r["pass"] is False]
    print(f"raw figures: {out}")
    if failed:
        print("targets missed: " + "; ".join(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
