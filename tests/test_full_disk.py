"""A full disk costs the job nothing but its log (SPEC §9), with the state dir on a real small tmpfs.

The tmpfs is mounted in a private mount namespace (`unshare -m`), so the host's mounts are never touched;
hbwrap and everything it starts run inside it, and the job dir is copied out when hbwrap has exited.
The command (tests/helpers/flood.py) records the hash of all it wrote to stdout outside the tmpfs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import HERE, Result, _processes, wait_until

FLOOD = [sys.executable, str(HERE / "helpers" / "flood.py")]

# $1 tmpfs size, $2 the state dir (mount point), $3 where the state dir is copied to afterwards, $4 bytes of a
# filler file to take space with (0: none), $5 a status to wait for in the job's state.json before the copy
# (a replacement supervisor finishing the run; "-": none); the rest is the hbwrap command line
SCRIPT = r'''
size=$1 state=$2 copy=$3 filler=$4 until=$5; shift 5
mount -t tmpfs -o size="$size",mode=0700 tmpfs "$state" || exit 99
if [ "$filler" != 0 ]; then head -c "$filler" /dev/zero > "$state/filler" || exit 98; fi
"$@"; rc=$?
if [ "$until" != - ]; then
    for i in $(seq 300); do grep -qs "\"status\": \"$until\"" "$state"/*/state.json && break; sleep 0.1; done
fi
cp -a "$state/." "$copy/"
exit $rc
'''


def _mount_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$1"', "sh", d],
                           capture_output=True, text=True)
    if r.returncode:
        why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        return f"cannot mount a tmpfs in a private mount namespace here ({why})"
    return None


MOUNT_PROBLEM = _mount_problem()
pytestmark = pytest.mark.skipif(MOUNT_PROBLEM is not None, reason=MOUNT_PROBLEM or "")


class FullDisk:
    """hbwrap with its state dir on a tmpfs of `size` inside a private mount namespace."""

    def __init__(self, hb, size: str, filler: int = 0):
        self.hb, self.size, self.filler = hb, size, filler
        self.copy = hb.tmp / "copy"
        self.hash_file = hb.tmp / "flood.sha256"
        self.filler_path = hb.state_dir / "filler"

    def flood(self, *steps) -> list[str]:
        return [*FLOOD, str(self.hash_file), *steps, self.hb.tag]

    def start(self, *hbwrap_args, until: str = "-", **kw) -> subprocess.Popen:
        self.hb.state_dir.mkdir(mode=0o700, exist_ok=True)
        self.copy.mkdir(exist_ok=True)
        argv = ["unshare", "-m", "sh", "-c", SCRIPT, "sh", self.size, str(self.hb.state_dir), str(self.copy),
                str(self.filler), until, self.hb.bin, *map(str, hbwrap_args)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=kw.pop("stdout", subprocess.PIPE),
                                stderr=subprocess.PIPE, env=self.hb.env, **kw)
        proc.started_at = time.monotonic()
        self.hb.procs.append(proc)
        return proc

    def run(self, *hbwrap_args, timeout: float = 60) -> Result:
        r = self.hb.finish(self.start(*hbwrap_args), timeout)
        assert r.returncode not in (98, 99), r  # the tmpfs or the filler could not be made
        return r

    def command_output(self) -> tuple[str, int]:
        digest, length = self.hash_file.read_text().split()
        return digest, int(length)

    def job(self, name: str) -> Path:
        return self.copy / name

    def events(self, name: str) -> list[dict]:
        text = (self.job(name) / "events.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]


def hbwrap_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("hbwrap:")]


def said_cannot_write(r: Result) -> list[str]:
    return [line for line in hbwrap_lines(r.err) if "cannot write" in line]


def assert_job_files_sound(job: Path) -> dict:
    """Every file readable as what it is, no temporary file left behind; the state.json document."""
    left = sorted(p.name for p in job.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))
    assert not left, left
    state = json.loads((job / "state.json").read_text())
    for line in (job / "events.jsonl").read_text().splitlines():
        json.loads(line)
    idx = (job / "output.idx").read_bytes()
    assert idx.endswith(b"\n"), idx[-200:]
    for line in idx.splitlines():
        kind, *nums = line.split()
        assert kind in (b"G", b"O", b"E", b"L", b"R") and nums and all(n.isdigit() for n in nums), line
    return state


def gaps(job: Path) -> list[tuple[int, int, int]]:
    """The (offset, bytes, unsent) gaps output.idx records."""
    return [tuple(int(n) for n in line.split()[1:]) for line in (job / "output.idx").read_bytes().splitlines()
            if line.startswith(b"L ")]


def test_a_full_disk_costs_only_the_log(hb):
    # the case: 2 MB for the state dir, 7 MB of output; it was killed as "keeper lost", exit 125,
    # passthrough stopped at 2,072,576 bytes and state.json said "running"
    disk = FullDisk(hb, "2m")
    r = disk.run("run", "--name", "full", "--response-timeout", "20s", "--",
                 *disk.flood("out:3000000", "err:disk is full by now", "out:4000000", "err:still writing",
                             "exit:3"))
    assert r.returncode == 3, r
    digest, length = disk.command_output()
    assert len(r.stdout) == length and hashlib.sha256(r.stdout).hexdigest() == digest, (len(r.stdout), length)
    err_lines = [line for line in r.err.splitlines() if not line.startswith("hbwrap:")]
    assert err_lines == ["disk is full by now", "still writing"], r
    said = said_cannot_write(r)
    assert len(said) == 1 and "No space left on device" in said[0] and "until space returns" in said[0], r
    assert "Traceback" not in r.err and "keeper" not in r.err, r
    assert any("failed with exit code 3" in line for line in hbwrap_lines(r.err)), r
    state = assert_job_files_sound(disk.job("full"))
    # how the run and the attempt ended went into the space set aside for these last words
    assert state["status"] == "failed" and state["exit_code"] == 3, state
    keeper = json.loads((disk.job("full") / "keeper.json").read_text())
    assert keeper["exit_code"] == 3 and keeper["ended_at"] and keeper["log_missing"] > 0, keeper
    assert (disk.job("full") / "output.log").stat().st_size + keeper["log_missing"] >= length


def test_a_stall_is_detected_and_restarted_while_the_disk_is_full(hb):
    # deadlines, the kill, a restart (a new keeper: its spec cannot go through the disk) and the exit code all
    # as with space; the lease (0.8 s, shorter than the hang) cannot be renewed in state.json, so it is renewed
    # by touching it: else the keeper would replace a healthy supervisor, and the replacement kill it as hung
    disk = FullDisk(hb, "2m")
    r = disk.run("run", "--name", "stall", "--response-timeout", "2", "--grace", "0.3", "--max-restarts", "1",
                 "--backoff", "0.2", "--lease", "0.8s", "--",
                 *disk.flood("out:2500000", "cp:half", "out:200000", "hang"), timeout=60)
    assert r.returncode == 124, r
    lines = hbwrap_lines(r.err)
    assert sum("stall stalled (response)" in line for line in lines) == 2, r
    assert any("restarting stall" in line for line in lines) and any("giving up on stall" in line for line in lines), r
    assert len(said_cannot_write(r)) == 1, r
    digest, length = disk.command_output()  # of the second attempt; the first wrote the same
    assert len(r.stdout) == 2 * length and r.stdout[:length] == r.stdout[length:], (len(r.stdout), length)
    assert hashlib.sha256(r.stdout[length:]).hexdigest() == digest
    assert "Traceback" not in r.err and "taken over" not in r.err and "hung" not in r.err, r
    state = assert_job_files_sound(disk.job("stall"))
    assert state["status"] == "escalated" and state["exit_code"] == 124, state


def test_quiet_still_says_what_it_could_not_write(hb):
    disk = FullDisk(hb, "2m")
    r = disk.run("run", "--name", "quiet", "--quiet", "--", *disk.flood("out:3000000", "exit:0"))
    assert r.returncode == 0 and r.stdout == b"", r
    assert len(said_cannot_write(r)) == 1 and hbwrap_lines(r.err) == said_cannot_write(r), r


def test_writing_resumes_when_space_returns(hb):
    # 4 MB with a 3 MB filler: the log fills up, a checkpoint event waits in memory, the filler goes, and the
    # log (with the place and size of its gap), state.json and the events are written again
    disk = FullDisk(hb, "4m", filler=3 * 1024 * 1024)
    r = disk.run("run", "--name", "back", "--response-timeout", "20s", "--",
                 *disk.flood("out:1500000", "cp:while-full", "out:100000", f"full:{disk.hb.state_dir}",
                             f"rm:{disk.filler_path}",
                             "out:500000", "cp:after", "exit:0"))
    assert r.returncode == 0, r
    digest, length = disk.command_output()
    assert hashlib.sha256(r.stdout).hexdigest() == digest, (len(r.stdout), length)
    assert len(said_cannot_write(r)) == 1, r
    job = disk.job("back")
    state = assert_job_files_sound(job)
    assert state["status"] == "succeeded" and state["checkpoint"] == "after", state
    events = disk.events("back")
    checkpoints = [e.get("checkpoint") for e in events if e["event"] == "checkpoint"]
    assert checkpoints[:1] == ["while-full"], events  # emitted while the disk was full, appended later
    ends = [e["event"] for e in events if e["event"] in ("exit", "success")]
    assert ends == ["exit", "success"], events
    log = (job / "output.log").read_bytes()
    recorded = gaps(job)
    assert recorded and all(unsent == 0 for _, _, unsent in recorded), recorded
    # the log is the command's output with the recorded gaps cut out, exactly
    pieces, out_pos, log_pos = [], 0, 0
    for offset, size, _ in recorded:
        take = offset - log_pos
        pieces.append(r.stdout[out_pos:out_pos + take])
        out_pos += take + size
        log_pos = offset
    pieces.append(r.stdout[out_pos:])
    assert b"".join(pieces) == log
    assert log.endswith(b"checkpoint:after\n")


def test_a_slow_reader_and_a_full_disk_lose_nothing(hb):
    # passthrough's reader stops taking output: what is not in the log waits in memory for it, in its place
    disk = FullDisk(hb, "2m")
    proc = disk.start("run", "--name", "slow", "--response-timeout", "20s", "--",
                      *disk.flood("out:7000000", "exit:0"))
    wait_until(lambda: disk.hash_file.exists(), timeout=30, what="the command to finish while nobody reads")
    r = hb.finish(proc, timeout=60)
    assert r.returncode == 0, r
    digest, length = disk.command_output()
    assert len(r.stdout) == length and hashlib.sha256(r.stdout).hexdigest() == digest, (len(r.stdout), length)
    assert len(said_cannot_write(r)) == 1, r


def _supervisor_pid(hb) -> int:
    def find():
        for pid, argv in _processes():
            if len(argv) > 2 and os.path.basename(argv[1]) == b"hbwrap" and argv[2] == b"run" \
                    and hb.tag.encode() in argv:
                return pid
        return None

    return wait_until(find, timeout=20, what="the supervisor")


def _stop_supervisor_a_while(hb, disk, name: str, stopped_s: float, more: int) -> Result:
    """Fill the disk, SIGSTOP the supervisor, let the command write `more` bytes, SIGCONT it after `stopped_s`."""
    go = hb.tmp / "go"
    proc = disk.start("run", "--name", name, "--response-timeout", "30s", "--",
                      *disk.flood("out:3000000", f"wait:{go}", f"out:{more}", "exit:0"))
    got = {}
    reader = threading.Thread(target=lambda: got.update(out=proc.stdout.read()))
    reader.start()
    pid = _supervisor_pid(hb)
    wait_until(disk.hash_file.exists, timeout=20, what="the disk to be full (3 MB written)")
    os.kill(pid, signal.SIGSTOP)
    go.touch()
    time.sleep(stopped_s)  # the scenario itself: a supervisor that takes nothing for this long
    os.kill(pid, signal.SIGCONT)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    reader.join(timeout=60)
    return Result(proc, got.get("out", b""), err, time.monotonic() - proc.started_at)


def test_a_supervisor_stopped_for_a_moment_loses_nothing(hb):
    # the keeper holds up to 16 MiB of refused output for it and, beyond that, holds the command back (18 MB:
    # at most 14 of them wait in passthrough's memory for the test's reader, whatever its speed)
    disk = FullDisk(hb, "2m")
    r = _stop_supervisor_a_while(hb, disk, "pause", 0.8, 18_000_000)
    assert r.returncode == 0, r
    digest, length = disk.command_output()
    assert len(r.stdout) == length and hashlib.sha256(r.stdout).hexdigest() == digest, (len(r.stdout), length)
    assert len(said_cannot_write(r)) == 1, r


def test_a_supervisor_that_takes_nothing_for_long_is_told_what_it_missed(hb):
    # beyond SPILL_STALL_S the command is not held back any longer: refused output is dropped, and said once
    disk = FullDisk(hb, "2m")
    r = _stop_supervisor_a_while(hb, disk, "stopped", 3.0, 40_000_000)
    assert r.returncode == 0, r
    digest, length = disk.command_output()
    assert len(r.stdout) < length, (len(r.stdout), length)
    missing = [line for line in hbwrap_lines(r.err) if "are missing from" in line]
    assert len(missing) == 1 and "could not be passed through" in missing[0], r
    assert len(said_cannot_write(r)) == 1, r


def test_a_supervisor_killed_on_a_full_disk_is_replaced_and_the_run_ends_as_it_would_have(hb):
    # self-heal needs no disk either: the keeper's replacement takes over, learns how the command ended and
    # records it; what the command wrote while no supervisor was there is missing, and said so, once
    disk = FullDisk(hb, "2m")
    go = hb.tmp / "go"
    proc = disk.start("run", "--name", "heal", "--response-timeout", "20s", "--",
                      *disk.flood("out:3000000", f"wait:{go}", "out:3000000", "exit:5"), until="failed")
    pid = _supervisor_pid(hb)
    wait_until(disk.hash_file.exists, timeout=20, what="the disk to be full (3 MB written)")
    os.kill(pid, signal.SIGKILL)
    go.touch()
    r = hb.finish(proc, timeout=60)
    assert r.returncode == 128 + signal.SIGKILL, r  # the first supervisor's; the replacement ends the run
    state = assert_job_files_sound(disk.job("heal"))
    assert state["status"] == "failed" and state["exit_code"] == 5 and state["heals"] == 1, state
    lines = hbwrap_lines(r.err)
    assert any("took over job heal" in line for line in lines) and any("exit code 5" in line for line in lines), r
    missing = [line for line in lines if "are missing from" in line]
    # what the first supervisor took over the channel before its SIGKILL it passed through (how much depends
    # on how soon it was killed); the rest of the 3 MB the disk refused reached no supervisor, and the
    # replacement says how much that was, once
    assert len(missing) == 1, r
    lost = int(missing[0].split()[1])
    assert 0 < lost <= 3_000_000, (lost, r)
    assert "Traceback" not in r.err, r


def test_a_stop_signal_on_a_full_disk_stops_the_job_as_ever(hb):
    disk = FullDisk(hb, "2m")
    proc = disk.start("run", "--name", "term", "--", *disk.flood("out:3000000", "hang"))
    pid = _supervisor_pid(hb)
    wait_until(disk.hash_file.exists, timeout=20, what="the disk to be full (3 MB written)")
    os.kill(pid, signal.SIGTERM)
    r = hb.finish(proc, timeout=60)
    assert r.returncode == 128 + signal.SIGTERM, r
    assert any("stopped term on SIGTERM" in line for line in hbwrap_lines(r.err)), r
    state = assert_job_files_sound(disk.job("term"))
    assert state["status"] == "stopped" and state["exit_code"] == 143, state
    assert not hb.leftovers()
