"""One monotonic instant is written as the same wall time in every event and in state.json (journal.wall_offset)."""
from __future__ import annotations

import json
from pathlib import Path

from hbwrap import policy
from hbwrap.jobstore import JobDir
from hbwrap.journal import Journal
from hbwrap.model import Event, RunRecord
from hbwrap.options import build_run_options

T0 = 1_796_000_000.0


class JitteryClock:
    """Wall and monotonic readings a few microseconds apart, as two real clock reads are; `step` moves wall."""

    def __init__(self):
        self.now, self.step, self.reads = 100.0, 0.0, 0

    def mono(self) -> float:
        self.reads += 1
        return self.now + self.reads * 3e-6

    def wall(self) -> float:
        self.reads += 1
        return T0 + self.step + self.now + self.reads * 3e-6


class Quiet:
    def message(self, text):
        pass


def _journal(tmp_path, clock):
    job_dir = tmp_path / "job"
    job_dir.mkdir(mode=0o700)
    job = JobDir(job_dir, "job")
    opts = build_run_options(command=["true"], name="job", state_dir=str(tmp_path))
    journal = Journal(job, clock, opts, Quiet())
    journal.st = policy.RunState(RunRecord(name="job", run_id="r1", attempt=1, status="awaiting-approval"))
    return job, journal


def test_an_instant_reads_the_same_in_events_and_state_whatever_the_jitter(tmp_path):
    clock = JitteryClock()
    job, journal = _journal(tmp_path, clock)
    offsets = set()
    for i in range(400):  # instants on every sub-millisecond phase, so a jittered offset would round apart
        until = 130.0 + i * 0.00025
        journal.st.rec.approval_until = until
        event = journal.emit(Event.RESTART_PENDING, approve_by=policy.At(until))
        journal.write_state(None)
        state = json.loads(Path(job.state_file).read_text())
        assert state["approval_until"] == event["approve_by"], (i, state["approval_until"], event["approve_by"])
        offsets.add(journal.wall_offset())
    assert len(offsets) == 1


def test_a_step_of_the_system_clock_is_followed(tmp_path):
    clock = JitteryClock()
    _job, journal = _journal(tmp_path, clock)
    before = journal.wall_offset()
    clock.step = 5.0  # the wall clock was set forward 5 s
    assert abs(journal.wall_offset() - (before + 5.0)) < 0.001
