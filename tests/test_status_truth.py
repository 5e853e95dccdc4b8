"""`status` and `metrics` tell what is true when the supervisor's record is stale (orphaned, hung, mid-restart).

The figures then come from the files other processes keep writing: the output log's modification time
for the last output, the keeper's record for the attempt and the child; a deadline already past is shown
as overdue, never as ahead.
"""
import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import time

from conftest import names, read_pid, wait_until
from hbwrap import procs, views
from hbwrap.jobstore import StateDir, iso, parse_iso, write_json_atomic
from hbwrap.model import SCHEMA_VERSION


def kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def prom_value(text, family, job):
    for line in text.splitlines():
        if line.startswith(f'{family}{{job_name="{job}"}} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {family} for {job} in:\n{text}")


def test_orphan_that_keeps_printing_shows_its_output_moving_forward(hb):
    """The supervisor is SIGKILLed (nothing restarts it in this branch); the command goes on printing."""
    pidfile = hb.path("pid")
    first = hb.start("run", "--name", "orph", "--no-self-heal", "--", *hb.agent("pidfile:" + pidfile, "loop:0.1"))
    read_pid(pidfile)
    hb.wait_event("orph", "attempt_start")
    log = hb.job_dir("orph") / "output.log"
    wait_until(lambda: hb.state("orph").get("last_output_at"), what="the supervisor to record output")
    kill9(first)
    row = hb.status("orph")[0]
    assert row["status"] == "orphaned", row
    before = parse_iso(row["last_output_at"])
    before_metric = prom_value(hb.run("metrics").out, "hbwrap_last_output_timestamp_seconds", "orph")

    def moved():
        now_row = hb.status("orph")[0]
        return parse_iso(now_row["last_output_at"]) >= before + 0.5 and now_row

    row = wait_until(moved, 10, what="last_output_at to move forward while orphaned",
                     seen=lambda: hb.status("orph")[0]["last_output_at"])
    assert row["status"] == "orphaned" and row["child_pid"] == read_pid(pidfile), row
    # it is the log's time: never ahead of now, and close to when the command last printed
    assert parse_iso(row["last_output_at"]) <= time.time() + 0.01
    assert abs(parse_iso(row["last_output_at"]) - log.stat().st_mtime) < 1.0
    wait_until(lambda: prom_value(hb.run("metrics").out, "hbwrap_last_output_timestamp_seconds", "orph")
               >= before_metric + 0.5, 10, what="the metric to move forward too")
    text = hb.run("status", "orph").out
    assert " 0s ago" in text or " 1s ago" in text, text


def test_orphan_in_backoff_shows_no_restart_ahead(hb):
    """Supervisor SIGKILLed while it waits to restart: the restart time passes and nobody restarts."""
    first = hb.start("run", "--name", "bk", "--no-self-heal", "--restart", "on-failure", "--backoff", "1s", "--",
                     *hb.agent("print:failing", "exit:3"))
    hb.wait_event("bk", "restart")
    wait_until(lambda: hb.state("bk").get("status") == "backoff", what="state backoff")
    kill9(first)
    restart_at = parse_iso(hb.state("bk")["next_deadline_at"])
    assert hb.state("bk")["next_deadline"] == "restart"
    wait_until(lambda: time.time() > restart_at + 1.2, timeout=5, what="the restart time to pass")
    row = hb.status("bk")[0]
    # nobody enforces an orphan's deadlines: none is shown until `hbwrap watch` takes it over
    assert row["status"] == "orphaned" and row["next_deadline_at"] is None, row
    assert row["next_deadline_overdue"] is False, row
    text = hb.run("status", "bk").out
    assert "restart in" not in text and text.splitlines()[1].rstrip().endswith(" -"), text


def test_hung_supervisor_in_backoff_shows_the_restart_overdue(hb):
    first = hb.start("run", "--name", "hung", "--restart", "on-failure", "--backoff", "1s", "--lease", "1h",
                     "--max-restarts", "1",
                     "--", *hb.agent("print:failing", "exit:3"))
    hb.wait_event("hung", "restart")
    wait_until(lambda: hb.state("hung").get("status") == "backoff", what="state backoff")
    first.send_signal(signal.SIGSTOP)
    try:
        restart_at = parse_iso(hb.state("hung")["next_deadline_at"])
        wait_until(lambda: time.time() > restart_at + 1.2, timeout=5, what="the restart time to pass")
        text = hb.run("status", "hung").out
        assert "backoff" in text and re.search(r"restart overdue \d+s", text) and "restart in" not in text, text
        assert hb.status("hung")[0]["next_deadline_overdue"] is True
    finally:
        first.send_signal(signal.SIGCONT)
    assert hb.finish(first).returncode == 3


# --- a supervisor's record older than the keeper's: a restart that happened after the last state write ----

def _fake_supervisor():
    """A live process that passes for a supervisor (its argv names hbwrap), so the job is not orphaned."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # hbwrap test supervisor"])


def _command(run_id, tag):
    env = dict(os.environ, HBWRAP_RUN_ID=run_id)
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", tag], env=env)


def _wait_started(pid):
    return wait_until(lambda: procs.start_time(pid), what=f"pid {pid} in /proc")


def test_keeper_record_of_a_newer_attempt_wins_over_a_stale_backoff(tmp_path, hb):
    run_id = "20261201T000000Z-abcdef"
    sup, cmd = _fake_supervisor(), _command(run_id, hb.tag)
    try:
        sup_start, cmd_start = _wait_started(sup.pid), _wait_started(cmd.pid)
        now = time.time()
        job = StateDir(tmp_path / "state").job("mid")
        os.makedirs(job.path)
        # the supervisor wrote this while it waited for the restart (3 s ago)...
        write_json_atomic(job.state_file, {
            "schema": SCHEMA_VERSION, "name": "mid", "run_id": run_id, "status": "backoff", "attempt": 1,
            "restarts": 1, "supervisor_pid": sup.pid, "supervisor_start": sup_start, "child_pid": None,
            "child_start": None, "checkpoint": "item-3", "exit_code": None, "started_at": iso(now - 10),
            "ended_at": None, "last_output_at": iso(now - 5), "last_life_at": iso(now - 5),
            "last_progress_at": iso(now - 5), "next_deadline_at": iso(now - 2), "next_deadline": "restart",
            "updated_at": iso(now - 3)})
        os.utime(job.state_file, (now - 3, now - 3))
        # ...then started attempt 2, whose command printed half a second ago
        write_json_atomic(job.keeper_file, {
            "schema": SCHEMA_VERSION, "run_id": run_id, "attempt": 2, "keeper_pid": sup.pid,
            "keeper_start": sup_start, "started_at": now - 1.5, "child_pid": cmd.pid, "child_start": cmd_start,
            "exit_code": None, "exit_signal": None, "ended_at": None})
        os.utime(job.keeper_file, (now - 1.5, now - 1.5))
        Path(job.log_file).write_bytes(b"attempt 1 output\nagent: attempt 2: resuming after item-3\n")
        os.utime(job.log_file, (now - 0.5, now - 0.5))

        row = views.job_row(job)
        assert row["attempt"] == 2 and row["restarts"] == 1, row
        assert row["child_pid"] == cmd.pid and row["status"] == "running", row
        assert row["next_deadline"] is None and row["next_deadline_at"] is None, row
        assert abs(parse_iso(row["last_output_at"]) - (now - 0.5)) < 0.01, row
        text = views.status_text([row], now=now)
        assert "restart in" not in text and re.search(r"  [01]s ago  ", text), text

        # the keeper then records that attempt 2's command exited: no child, and its exit is shown
        cmd.kill()
        cmd.wait()
        write_json_atomic(job.keeper_file, {
            **json.loads(Path(job.keeper_file).read_text()), "exit_code": 0, "exited_at": now, "ended_at": now})
        row = views.job_row(job)
        assert row["child_pid"] is None and row["child_exit_code"] == 0 and row["attempt"] == 2, row
    finally:
        for p in (sup, cmd):
            p.kill()
            p.wait()


def test_keeper_record_of_another_run_is_ignored(tmp_path):
    now = time.time()
    job = StateDir(tmp_path / "state").job("old")
    os.makedirs(job.path)
    write_json_atomic(job.state_file, {
        "schema": SCHEMA_VERSION, "name": "old", "run_id": "run-2", "status": "succeeded", "attempt": 1,
        "restarts": 0, "supervisor_pid": None, "child_pid": None, "checkpoint": None, "exit_code": 0,
        "started_at": iso(now - 60), "ended_at": iso(now - 50), "last_output_at": iso(now - 51),
        "last_progress_at": None, "next_deadline_at": None, "next_deadline": None, "updated_at": iso(now - 50)})
    os.utime(job.state_file, (now - 50, now - 50))
    write_json_atomic(job.keeper_file, {"schema": SCHEMA_VERSION, "run_id": "run-1", "attempt": 4,
                                        "child_pid": os.getpid(), "child_start": procs.start_time(os.getpid())})
    Path(job.log_file).write_bytes(b"x\n")
    row = views.job_row(job)
    assert row["attempt"] == 1 and row["child_pid"] is None and row["status"] == "succeeded", row
    assert row["last_output_at"] == iso(now - 51), row  # a finished run's record is the truth


def test_status_row_keys_of_spec_section_4_are_kept(hb):
    assert hb.run("run", "--name", "k", "--", "true").returncode == 0
    row = hb.status("k")[0]
    for key in ("name", "status", "attempt", "restarts", "child_pid", "supervisor_pid", "checkpoint",
                "last_output_at", "last_progress_at", "exit_code"):
        assert key in row, key
    assert "success" in names(hb.events("k"))


def test_hung_supervisor_of_a_printing_command_moves_output_and_response_deadline(hb):
    """SIGSTOPped supervisor (hung, its lease not yet expired): the command's output goes on."""
    first = hb.start("run", "--name", "stopped", "--response-timeout", "30s", "--lease", "1h", "--",
                     *hb.agent("loop:0.1"))
    wait_until(lambda: (hb.job_dir("stopped") / "state.json").exists() and hb.state("stopped").get("last_output_at"),
               what="the supervisor to record output")
    first.send_signal(signal.SIGSTOP)
    try:
        recorded = hb.state("stopped")
        row = wait_until(lambda: (lambda r: parse_iso(r["last_output_at"]) > parse_iso(recorded["updated_at"]) + 1
                                  and r)(hb.status("stopped")[0]), 10, what="output newer than the record")
        assert row["status"] == "running" and row["next_deadline"] == "response", row
        assert abs(parse_iso(row["next_deadline_at"]) - (parse_iso(row["last_output_at"]) + 30)) < 0.01, row
        assert parse_iso(row["next_deadline_at"]) > parse_iso(recorded["next_deadline_at"]) + 1, (row, recorded)
    finally:
        first.send_signal(signal.SIGCONT)
    hb.run("stop", "stopped")
    assert hb.finish(first).returncode == 143
