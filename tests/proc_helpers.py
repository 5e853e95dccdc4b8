"""Starting tests/helpers/busy.py processes and waiting for their READY (shared by the incident and activity tests)."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

BUSY = [sys.executable, str(Path(__file__).resolve().parent / "helpers" / "busy.py")]


class Busy:
    """Starts busy.py processes (each the leader of its own process group) and kills their groups at the end."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, *args, ready: bool = True, **kw) -> subprocess.Popen:
        proc = subprocess.Popen([*BUSY, *map(str, args), f"tag:{self.tmp}"], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, process_group=kw.pop("process_group", 0), **kw)
        self.procs.append(proc)
        if ready:
            self.wait_ready(proc)
        return proc

    @staticmethod
    def wait_ready(proc: subprocess.Popen, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
            if r:
                line = proc.stdout.readline()
                assert line.strip() == b"READY", f"{proc.args[2:4]} printed {line!r}, not READY (exit {proc.poll()})"
                return
        raise AssertionError(f"{proc.args[2:4]} did not print READY within {timeout}s (exit {proc.poll()})")

    @staticmethod
    def wait_sleeping(pid: int, timeout: float = 10.0) -> None:
        """Until `pid` sleeps (state S): from then on its CPU counters stay put until something wakes it."""
        end = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < end:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state == "S":
                return
            time.sleep(0.005)
        raise AssertionError(f"process {pid} did not go to sleep within {timeout}s (state {state})")

    def cleanup(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            proc.stdout.close()
