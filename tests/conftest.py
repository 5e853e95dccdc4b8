"""Shared fixtures: drive the installed `hbwrap` binary as real subprocesses, one state dir per test.

`hb` (an `Hb`) starts hbwrap with HBWRAP_STATE_DIR and XDG_CONFIG_HOME inside the test's tmp_path, so
tests never see each other's jobs or the user's config. Supervised commands are `tests/helpers/agent.py`
step lists (`hb.agent(...)`), tagged with `tag:<tmp_path>`; an autouse fixture SIGKILLs every process
still carrying the tag (or running in the test's tmp_path) when the test ends, whatever happened.

HBWRAP_BIN selects the binary; by default the `hbwrap` next to the running interpreter (the venv's).
"""
from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
AGENT_PATH = HERE / "helpers" / "agent.py"
AGENT = [sys.executable, str(AGENT_PATH)]

# The tests start hbwrap as an interactive shell would. A background job of a non-interactive shell
# (`./scripts/test &`, some CI runners) starts with SIGINT and SIGQUIT ignored, and hbwrap rightly passes
# ignored signals on to the command (as `nohup` expects): undo that here, for every process the tests start.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than 20 s (deselect with -m 'not slow')")


def hbwrap_bin() -> str:
    path = os.environ.get("HBWRAP_BIN") or str(Path(sys.executable).parent / "hbwrap")
    if not os.access(path, os.X_OK):
        pytest.exit(f"hbwrap binary {path!r} not found: set HBWRAP_BIN or install hbwrap into this venv", returncode=3)
    return path


def _describe(predicate) -> str:
    try:
        return inspect.getsource(predicate).strip()[:300]
    except (OSError, TypeError):
        return repr(predicate)


def wait_until(predicate, timeout: float = 10.0, every: float = 0.02, what: str | None = None, seen=None):
    """Poll `predicate` until it returns something truthy (returned) or `timeout` s pass (AssertionError).

    The failure message says what was awaited (`what`, else the predicate's source) and what was seen
    last: `seen()` if given, else the predicate's last return value.
    """
    end = time.monotonic() + timeout
    value = None
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            break
        time.sleep(every)
    observed = seen() if seen is not None else value
    raise AssertionError(f"waited {timeout}s for {what or _describe(predicate)}; last saw: {observed!r}")


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def read_pid(path, timeout: float = 10.0) -> int:
    p = Path(path)

    def content():
        try:
            return p.read_text().strip()
        except FileNotFoundError:
            return ""

    return int(wait_until(content, timeout, what=f"a pid in {p}", seen=lambda: f"exists={p.exists()}"))


def names(events) -> list[str]:
    return [e["event"] for e in events]


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size of a live process (VmHWM), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class Result:
    def __init__(self, proc, out: bytes, err: bytes, elapsed: float):
        self.returncode = proc.returncode
        self.stdout = out
        self.stderr = err
        self.elapsed = elapsed

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    def __repr__(self) -> str:
        return (f"<exit {self.returncode} after {self.elapsed:.2f}s\nstdout: {self.out[-2000:]}\n"
                f"stderr: {self.err[-2000:]}>")


class Hb:
    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.state_dir = tmp_path / "state"
        self.env = dict(os.environ, HBWRAP_STATE_DIR=str(self.state_dir))
        for var in ("HBWRAP_CONFIG", "HBWRAP_CHECKPOINT_FILE", "HBWRAP_HEARTBEAT_FILE", "HBWRAP_JOB",
                    "HBWRAP_RUN_ID", "HBWRAP_ATTEMPT", "HBWRAP_RESUME_FROM", "XDG_STATE_HOME", "PYTHONUNBUFFERED"):
            self.env.pop(var, None)
        self.env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
        self.bin = hbwrap_bin()
        self.procs: list[subprocess.Popen] = []
        self.tag = f"tag:{tmp_path}"

    def path(self, name: str) -> str:
        return str(self.tmp / name)

    # --- running hbwrap ------------------------------------------------------------------------------
    def start(self, *args, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(
            [self.bin, *map(str, args)],
            stdout=kw.pop("stdout", subprocess.PIPE),
            stderr=kw.pop("stderr", subprocess.PIPE),
            stdin=kw.pop("stdin", subprocess.DEVNULL),
            env=kw.pop("env", self.env),
            **kw,
        )
        proc.started_at = time.monotonic()
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen, timeout: float = 30) -> Result:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"hbwrap did not finish within {timeout}s:\n{(err or b'').decode(errors='replace')[-3000:]}")
        return Result(proc, out or b"", err or b"", time.monotonic() - proc.started_at)

    def run(self, *args, timeout: float = 30, **kw) -> Result:
        return self.finish(self.start(*args, **kw), timeout)

    def agent(self, *steps) -> list[str]:
        """The agent command line, tagged with this test's directory for clean-up."""
        return [*AGENT, *steps, self.tag]

    # --- reading what hbwrap recorded (its commands, and its files: allowed in our own tests) ---------
    def events(self, name: str) -> list[dict]:
        r = self.run("events", name, "--json", timeout=15)
        assert r.returncode == 0, r
        return [json.loads(line) for line in r.out.splitlines() if line.strip()]

    def status(self, name: str | None = None) -> list[dict]:
        r = self.run("status", *([name] if name else []), "--json", timeout=15)
        assert r.returncode == 0, r
        return json.loads(r.out)

    def job_dir(self, name: str) -> Path:
        return self.state_dir / name

    def state(self, name: str) -> dict:
        return json.loads((self.job_dir(name) / "state.json").read_text())

    def event_file(self, name: str) -> list[dict]:
        try:
            text = (self.job_dir(name) / "events.jsonl").read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def log_bytes(self, name: str) -> bytes:
        return (self.job_dir(name) / "output.log").read_bytes()

    def wait_event(self, name: str, event: str, timeout: float = 10.0) -> dict:
        def find():
            return next((e for e in self.event_file(name) if e["event"] == event), None)

        return wait_until(find, timeout, what=f"event {event!r} of job {name}",
                          seen=lambda: names(self.event_file(name)))

    # --- clean-up -------------------------------------------------------------------------------------
    def leftovers(self) -> list[int]:
        """Pids of processes (other than hbwrap itself) still carrying this test's tag."""
        tag = self.tag.encode()
        found = []
        for pid, argv in _processes():
            if tag in argv and alive(pid):
                # hbwrap itself (its argv holds the tag too); compare basenames only
                if any(os.path.basename(a).startswith(b"hbwrap") for a in argv[:2]):
                    continue
                found.append(pid)
        return found

    def cleanup(self) -> None:
        kill_test_processes(self.tmp)
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def _processes():
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        yield int(entry), argv


def kill_test_processes(tmp_path: Path) -> list[int]:
    """SIGKILL every live process whose argv carries `tag:<tmp_path>` or a path inside tmp_path.

    That covers hbwrap supervisors and agents (the tag) and keepers (their job dir is in tmp_path).
    Supervisors go first, so that none of them restarts what the next round kills.
    """
    marker = os.fsencode(str(tmp_path))
    me = os.getpid()
    victims = [(pid, argv) for pid, argv in _processes()
               if pid != me and any(marker in a for a in argv) and alive(pid)]
    victims.sort(key=lambda v: 0 if any(os.path.basename(a).startswith(b"hbwrap") for a in v[1][:2]) else 1)
    for pid, _ in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return [pid for pid, _ in victims]


@pytest.fixture
def hb(tmp_path):
    h = Hb(tmp_path)
    yield h
    h.cleanup()


@pytest.fixture(autouse=True)
def _kill_tagged_processes(request):
    """Whatever a test did, nothing it started survives it (tests that use tmp_path, i.e. all process tests)."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None:
        kill_test_processes(tmp)


# --- alert tests: loopback servers and Alerters (helpers in alertkit.py, hcfake.py) ---------------------

@pytest.fixture
def servers():
    """Make scripted loopback HTTP servers (alertkit.Server); all are stopped after the test."""
    from alertkit import Server

    made = []

    def make(*args, **kw):
        made.append(Server(*args, **kw))
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def h():
    """An alertkit.Harness: Alerters whose records land in lists; all are closed after the test."""
    from alertkit import Harness

    harness = Harness()
    yield harness
    for alerter in harness.alerters:
        alerter.close(wait_s=0)


@pytest.fixture
def hc():
    """Make healthchecks stand-ins (hcfake.FakeHealthchecks); all are stopped after the test."""
    from hcfake import FakeHealthchecks

    made = []

    def make(**kw):
        made.append(FakeHealthchecks(**kw))
        return made[-1]

    yield make
    for server in made:
        server.stop()
