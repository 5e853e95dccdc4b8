"""Fakes for the supervisor's seams (clock, wait, launcher): the real loop and policy run against a scripted
world in fake time, so a history of minutes runs in milliseconds (honcho's tests/test_manager.py HISTORIES).

The world keeps real files where the supervisor reads them (the job's output log, written with the real
LogWriter; heartbeat and checkpoint files); only processes and time are simulated. A history scripts what
each attempt's command does, relative to the moment its keeper reports: ("out", b"..."), ("err", b"..."),
("beat",), ("checkpoint", "v"), ("exit", code), ("die", signum), ("hang",) (nothing more),
("ignore_term",) (it survives the kill signal: the keeper SIGKILLs it after --grace), ("keeper_dies",)
(the keeper is gone; the command runs on), ("exec", 127, "No such file or directory") (it never ran).
Whole-run events go in `at`: [(t, ("signal", 15))] sends hbwrap a signal at absolute time t,
[(t, ("kill_supervisor",))] stops the supervisor dead (a SIGKILL: nothing more of it runs), and
[(t, ("answer", "approve"))] answers a pending restart approval as `hbwrap approve` would (the real answer
file, for the run and attempt state.json names; ("answer", "deny", "bob@host") says who).
A `--restart-check` is scripted by its command text (FakeCheck): "pass", "fail", "hang", or "pass:2.5" /
"fail:2.5" (its verdict after 2.5 s).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from hbwrap.model import SCHEMA_VERSION
from hbwrap.logwriter import LogWriter
from hbwrap.output import STDERR, STDOUT

T0_WALL = 1_800_000_000.0
HANDSHAKE_S = 0.02   # a keeper reports this long after it is started
KILL_S = 0.01        # a command that does not ignore the kill signal dies this long after it


class Killed(BaseException):
    """The supervisor was killed (SIGKILL): raised from its one wait, so nothing more of it runs."""


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def mono(self) -> float:
        return self.now

    def wall(self) -> float:
        return T0_WALL + self.now


class World:
    """Time, the attempts' scripted commands, and the run-wide events of one history."""

    def __init__(self, job_dir: Path, attempts: dict[int, list], at: list | None = None, grace_s: float = 10.0):
        self.clock = FakeClock()
        self.job_dir = job_dir
        self.scripts = attempts
        self.at = sorted(at or [], key=lambda item: item[0])
        self.grace_s = grace_s
        self.sup = None
        self.handles: dict[int, FakeHandle] = {}
        self.probes: list[FakeProbe] = []
        self.checks: list[FakeCheck] = []
        self.launches = 0
        self._token = 1_000_000
        self.writer: LogWriter | None = None

    def token(self) -> int:
        self._token += 1
        return self._token

    def log(self) -> LogWriter:
        if self.writer is None:
            self.writer = LogWriter(self.job_dir / "output.log", self.job_dir / "output.idx", 50_000_000)
        return self.writer

    # --- the seams ---------------------------------------------------------------------------------
    def wait(self, fds: list[tuple[int, int]], timeout_s: float | None) -> set[int]:
        """Advance fake time to the next thing that happens (or the timeout) and say which fds are ready."""
        wanted = {fd for fd, _ in fds}
        limit = self.clock.now + (timeout_s if timeout_s is not None else 3600.0)
        while True:
            due = [t for t in self._pending_times() if t <= limit]
            if not due:
                self.clock.now = max(self.clock.now, limit)
                return self._ready(wanted)
            self.clock.now = max(self.clock.now, min(due))
            self._run_due()
            ready = self._ready(wanted)
            if ready:
                return ready

    def _pending_times(self) -> list[float]:
        times = [t for t, _ in self.at]
        for handle in self.handles.values():
            times.extend(handle.pending_times())
        times.extend(c.ends_at for c in self.checks if c.ends_at is not None and c.ends_at > self.clock.now)
        return times

    def _run_due(self) -> None:
        now = self.clock.now
        while self.at and self.at[0][0] <= now:
            _, action = self.at.pop(0)
            if action[0] == "signal":
                self.sup.signals.received.append(action[1])
            elif action[0] == "kill_supervisor":
                raise Killed()
            elif action[0] == "answer":
                self.answer(*action[1:])
            elif action[0] == "superseded":
                # the supervisor is stopped for action[1] s, and meanwhile another one takes the run over
                import json

                self.clock.now += action[1]
                path = self.job_dir / "state.json"
                doc = json.loads(path.read_text())
                doc.update(generation=doc["generation"] + 1, supervisor_pid=1, supervisor_start=1)
                path.write_text(json.dumps(doc))
        for handle in self.handles.values():
            handle.run_due(now)

    def _ready(self, wanted: set[int]) -> set[int]:
        ready = set()
        if self.sup is not None and len(self.sup.signals.received) > self.sup.signals.seen:
            ready.add(self.sup.signals.fd)
        for handle in self.handles.values():
            ready |= handle.ready_tokens()
        ready |= {p.pidfd for p in self.probes if p.result() is not None}
        ready |= {c.pidfd for c in self.checks if c.exited() and not c.reported}
        return ready & wanted if wanted else ready

    def answer(self, verdict: str, by: str = "alice@laptop") -> None:
        """hbwrap approve/deny, at this instant of fake time: the real answer file, for the recorded attempt."""
        import json

        from hbwrap.approval import write_answer
        from hbwrap.jobstore import JobDir
        from hbwrap.model import RunRecord

        doc = json.loads((self.job_dir / "state.json").read_text())
        write_answer(JobDir(self.job_dir, self.job_dir.name), RunRecord.from_doc(doc, 0.0), verdict, by,
                     self.clock.wall())


class FakeLauncher:
    def __init__(self, world: World):
        self.world = world

    def launch(self, opts, rec, spec, markers, hold_fds):
        world = self.world
        world.launches += 1
        handle = FakeHandle(world, rec.run_id, rec.attempt, world.scripts.get(rec.attempt, [("hang",)]))
        handle.start(world.clock.now)
        world.handles[rec.attempt] = handle
        return handle

    def adopt(self, rec, markers, keeper):
        handle = self.world.handles.get(keeper.get("attempt"))
        if handle is None or handle.keeper_pid != keeper.get("keeper_pid"):
            raise AssertionError(f"adopting a keeper the world does not know: {keeper}")
        handle.adopted()
        return handle

    def start_probe(self, command, env, cwd):
        probe = FakeProbe(self.world, command)
        self.world.probes.append(probe)
        return probe

    def start_check(self, command, env, cwd, secrets):
        check = FakeCheck(self.world, command, env)
        self.world.checks.append(check)
        return check


class FakeProbe:
    """`--probe` scripted by its command text: "pass" passes at once, "fail" fails, "hang" never ends."""

    def __init__(self, world: World, command: str):
        self.world, self.command, self.pid = world, command, world.token()
        self.pidfd = world.token()

    def fds(self):
        return [self.pidfd]

    def result(self):
        return {"pass": 0, "fail": 1}.get(self.command)

    def kill(self):
        return -1

    def close(self):
        pass


class FakeCheck:
    """A `--restart-check` scripted by its command text: "pass" / "fail" [":" seconds], or "hang"."""

    def __init__(self, world: World, command: str, env: dict):
        self.world, self.command, self.env = world, command, env
        # a pid above any pid_max (2**22): a takeover that looks for it finds no process to kill
        self.pid, self.start_time, self.pidfd = 5_000_000 + world.token() % 1000, 3_000, world.token()
        verdict, _, after = command.partition(":")
        self.code = {"pass": 0, "fail": 1}.get(verdict)
        self.ends_at = None if self.code is None else world.clock.now + float(after or 0.1)
        self.killed = self.reported = False
        self.done = False  # a real check that could not be started reports at once; this one never does
        self.polled = False

    def exited(self) -> bool:
        return self.killed or (self.ends_at is not None and self.world.clock.now >= self.ends_at)

    def fds(self):
        return [] if self.reported else [self.pidfd]

    def result(self, ready):
        if self.pidfd not in ready and not self.killed or not self.exited():
            return None
        self.reported = True
        if self.killed:
            return {"signal": 9, "timed_out": True, "output": "killed"}
        return {"exit_code": self.code, "timed_out": False, "output": f"{self.command} said so"}

    def kill(self):
        self.killed = True

    def close(self):
        pass


class FakeHandle:
    """A keeper and its command, as the supervisor sees them through launcher.AttemptHandle's methods."""

    def __init__(self, world: World, run_id: str, attempt: int, script: list):
        self.world, self.run_id, self.attempt = world, run_id, attempt
        self.script = list(script)
        self.keeper_pid, self.keeper_start = 40_000 + attempt, 1_000 + attempt
        self.child_pid: int | None = None
        self.child_start: int | None = None
        self.pidfd: int | None = world.token()
        self.group_pidfd = None
        self.handshake_fd: int | None = world.token()
        self.events: list[tuple[float, tuple]] = []
        self.record: dict = {"schema": SCHEMA_VERSION, "run_id": run_id, "attempt": attempt,
                             "keeper_pid": self.keeper_pid, "keeper_start": self.keeper_start, "ended_at": None,
                             "exit_code": None, "exit_signal": None, "exec_error": None, "sigkill_at": None}
        self.alive = True           # the keeper process
        self.command = False        # the command process
        self.ignores_term = False
        self.released = False
        self.reported = None        # the handshake line, once due
        self.script_dump = next((step[1] for step in script if step[0] == "dumps"), None)
        self.stop_at: float | None = None
        self.record_dirty = False
        self.cpu_busy: list[tuple[float, float]] = []  # (since, CPU seconds per second): a ("busy", rate) step
        self.io_bytes = 0
        self.dumps: list[int] = []

    # --- the world's side --------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.events.append((now + HANDSHAKE_S, ("report",)))

    def adopted(self) -> None:
        self.handshake_fd = None
        self.pidfd = self.world.token() if self.alive else None

    def pending_times(self) -> list[float]:
        return [t for t, _ in self.events]

    def run_due(self, now: float) -> None:
        while True:
            due = [e for e in self.events if e[0] <= now]
            if not due:
                return
            item = min(due, key=lambda e: e[0])
            self.events.remove(item)
            self._happen(item[0], item[1])

    def _happen(self, t: float, action: tuple) -> None:
        kind = action[0]
        if kind == "report":
            first = self.script[0] if self.script else ("hang",)
            if first[0] == "exec":
                self.reported = ("exec", first[1], first[2])
                self._end(t, exec_error=first[1])
                return
            self.command = True
            self.child_pid, self.child_start = 50_000 + self.attempt, 2_000 + self.attempt
            self.reported = ("ok", self.child_pid, self.child_start)
            self._save()
            for step in self.script:
                if step[0] == "at":  # ("at", dt, action): later in the attempt
                    self.events.append((t + step[1], step[2]))
                else:
                    self.events.append((t, step))
            return
        if not self.command and kind not in ("keeper_dies", "sigkill", "released"):
            return  # the command is gone: what it would have done later does not happen
        if kind in ("out", "err"):
            self.world.log().write(STDOUT if kind == "out" else STDERR, action[1])
        elif kind == "beat":
            path = self.world.job_dir / "heartbeat"
            path.touch()
            os.utime(path, ns=(int(self.world.clock.wall() * 1e9),) * 2)
        elif kind == "checkpoint":
            path = self.world.job_dir / "checkpoint"
            path.write_text(action[1] + "\n")
        elif kind == "exit":
            self._end(t, exit_code=action[1])
        elif kind == "die":
            self._end(t, exit_signal=action[1])
        elif kind == "ignore_term":
            self.ignores_term = True
        elif kind == "busy":
            self.cpu_busy.append((t, action[1]))
        elif kind == "io":
            self.io_bytes += action[1]
        elif kind == "dump_signal":
            self.dumps.append(action[1])
            if self.script_dump:
                self.world.log().write(STDERR, self.script_dump)
        elif kind == "keeper_dies":
            self.alive = False
        elif kind == "sigkill":
            self.record["sigkill_at"] = self.world.clock.wall()
            self._end(t, exit_signal=signal.SIGKILL)

    def _end(self, t: float, **status) -> None:
        self.command = False
        self.record.update(status)
        if self.alive:
            self.record["ended_at"] = T0_WALL + t
            self._save()

    def _save(self) -> None:
        if not self.alive:
            return
        import json

        if self.record.get("child_pid") is None and self.child_pid is not None:
            self.record.update(child_pid=self.child_pid, child_start=self.child_start)
        (self.world.job_dir / "keeper.json").write_text(json.dumps(self.record))
        self.record_dirty = True

    def ready_tokens(self) -> set[int]:
        ready = set()
        if self.handshake_fd is not None and self.reported is not None:
            ready.add(self.handshake_fd)
        if self.pidfd is not None and (self.record_dirty or not self.alive):
            ready.add(self.pidfd)
        return ready

    # --- the supervisor's side (launcher.AttemptHandle's methods) -----------------------------------
    def fds(self):
        return [fd for fd in (self.handshake_fd, self.pidfd) if fd is not None]

    def handshake(self):
        if self.reported is None:
            return None
        self.handshake_fd = None
        return self.reported

    def abandon(self, why):
        self.handshake_fd = None
        self.alive = False
        return "lost", False, why

    def ended_record(self):
        self.record_dirty = False
        return dict(self.record) if self.record.get("ended_at") else None

    def keeper_alive(self):
        return self.alive

    def keeper_verified(self):
        return self.alive

    def command_alive(self):
        return self.command

    def group_gone(self):
        return not self.command

    def request_stop(self):
        if not self.alive or not self.command:
            return
        now = self.world.clock.now
        if self.ignores_term:
            self.events.append((now + self.world.grace_s, ("sigkill",)))
        else:
            self.events.append((now + KILL_S, ("die", self.world.sup.opts.kill_signal)))

    def force_kill(self):
        if self.command:
            self.events.append((self.world.clock.now, ("sigkill",)))

    def signal_group(self, sig):
        if self.command and (sig == signal.SIGKILL or not self.ignores_term):
            self.command = False
            self.record.update(exit_signal=sig)

    def sweep(self):
        return []

    def sample(self, now):
        from hbwrap.activity import ProcSample

        cpu = sum(rate * max(0.0, now - since) for since, rate in self.cpu_busy)
        procs = {self.child_pid: ProcSample(self.child_start, int(cpu * 100), 0, 0, self.io_bytes)}
        return {"mono": now, "cpu_s": cpu, "io_bytes": self.io_bytes, "procs": procs, "keeper_pid": self.keeper_pid}

    def snapshot(self, baseline, now, wall, secrets):
        return {"roots": [self.keeper_pid, self.child_pid], "processes": [
            {"pid": self.child_pid, "ppid": self.keeper_pid, "state": "S", "wchan": "do_sys_poll",
             "cmdline": "cmd", "cpu_share": 0.0, "sockets": []}]}

    def signal_command(self, sig):
        self.events.append((self.world.clock.now, ("dump_signal", sig)))

    def release(self):
        self.released = True

    def wait_released(self, timeout_s):
        pass

    def close_pidfd(self):
        self.pidfd = None

    def close(self):
        self.pidfd = self.handshake_fd = None


def supervise(tmp_path: Path, opts_kw: dict, attempts: dict[int, list], at=None, by="run", world=None,
              takeover_only=False):
    """Run the real Supervisor in `world` (a new one unless given); (exit code or "killed", world)."""
    from hbwrap.options import RunOptions
    from hbwrap.supervisor import Supervisor

    state_dir = tmp_path / "state"
    opts = RunOptions(command=("cmd",), name="job", state_dir=str(state_dir), cwd=str(tmp_path), **opts_kw)
    job_dir = state_dir / "job"
    job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if world is None:
        world = World(job_dir, attempts, at, grace_s=opts.grace_s)
    out = os.open(tmp_path / "passthrough.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        import random

        sup = Supervisor(opts, clock=world.clock, launcher=FakeLauncher(world), waiter=world, rng=random.Random(7),
                         stdout_fd=out, stderr_fd=out, by=by, base_env={"PATH": "/usr/bin:/bin"}, use_inotify=False)
        world.sup = sup
        try:
            code = sup.run(takeover_only=takeover_only)
        except Killed:
            code = "killed"
    finally:
        os.close(out)
    return code, world


def events(tmp_path: Path) -> list[dict]:
    import json

    path = tmp_path / "state" / "job" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
