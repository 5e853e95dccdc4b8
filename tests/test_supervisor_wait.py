"""The supervisor's one wait: what decides its timeout (the rest is in test_histories, with a fake clock)."""
from __future__ import annotations

import os

from hbwrap import policy
from hbwrap.model import RunRecord
from hbwrap.options import RunOptions
from hbwrap.supervisor import EARLY_POLL_S, Supervisor


def _supervisor(tmp_path) -> Supervisor:
    job_dir = tmp_path / "state" / "job"
    job_dir.mkdir(parents=True, mode=0o700)
    os.chmod(tmp_path / "state", 0o700)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    opts = RunOptions(command=("true",), name="job", state_dir=str(tmp_path / "state"), cwd=str(tmp_path))
    sup = Supervisor(opts, stdout_fd=out, stderr_fd=out, use_inotify=True)
    sup.st = policy.RunState(RunRecord(name="job", run_id="r1", started_at=sup.clock.mono()))
    return sup


def test_the_wait_right_after_the_inotify_watch_is_made_is_zero(tmp_path):
    # output written between the last early poll and the watch is in no inotify queue: if the loop then
    # slept until the next event, a command that printed its last line at that moment and hung would be
    # seen only at the next unrelated wake-up (a second late, as measured)
    sup = _supervisor(tmp_path)
    now = sup.clock.mono()
    sup._setup_watches()
    assert sup._timeout(now) <= EARLY_POLL_S + 0.001  # before the watch: polled often
    sup._make_watch(now + 1.0)
    assert sup.inotify is not None
    assert sup._timeout(now + 1.0) == 0.0
