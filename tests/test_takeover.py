"""Overlap and takeover with real processes: killed and hung supervisors, watch, stop, --if-running, identity safety."""
import json
import os
import random
import signal
import subprocess
import time

import pytest

from conftest import alive, names, read_pid, wait_until


def count_lines(path):
    try:
        with open(path) as f:
            return len(f.read().split())
    except FileNotFoundError:
        return 0


def job_file(hb, name, filename):
    return hb.state_dir / name / filename


def wait_status(hb, name, wanted, timeout=10):
    seen = []

    def check():
        r = hb.run("status", name, "--json")
        if r.returncode != 0:  # the job's directory is not there yet
            seen.append(r.err.strip())
            return False
        status = json.loads(r.out)[0]["status"]
        seen.append(status)
        return status == wanted

    assert wait_until(check, timeout), f"status of {name} never became {wanted}; saw {seen[-5:]}"


def kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_watch_adopts_after_sigkill_during_output(hb):
    count, pidfile = hb.path("count"), hb.path("pid")
    first = hb.start("run", "--name", "orphan", "--no-self-heal", "--", *hb.agent("count:" + count, "pidfile:" + pidfile,
                                                                 "numbered:20:0.1", "exit:7"))
    child = read_pid(pidfile)
    assert wait_until(lambda: b"line 3" in (job_file(hb, "orphan", "output.log").read_bytes()
                                            if job_file(hb, "orphan", "output.log").exists() else b""))
    kill9(first)
    assert alive(child), "the command must outlive its supervisor"
    row = hb.status("orphan")[0]
    assert row["status"] == "orphaned" and row["supervisor_pid"] is None and row["child_pid"] == child, row
    second = hb.run("watch", "orphan", timeout=30)
    assert second.returncode == 7, second
    assert count_lines(count) == 1
    first_out = first.stdout.read().decode()
    together = first_out + second.out
    for i in range(1, 21):
        assert together.count(f"line {i}\n") == 1, (i, first_out, second.out)
    ev = hb.events("orphan")
    takeover = [e for e in ev if e["event"] == "takeover"]
    assert takeover and takeover[0]["attempt"] == 1
    assert len({e["run_id"] for e in ev}) == 1
    assert ev[-1]["event"] == "failure" and ev[-1]["exit_code"] == 7


def test_run_adopts_instead_of_starting_a_second_copy(hb):
    count, pidfile = hb.path("count"), hb.path("pid")
    cmd = hb.agent("count:" + count, "pidfile:" + pidfile, "numbered:10:0.1", "exit:0")
    first = hb.start("run", "--name", "cron", "--no-self-heal", "--", *cmd)
    read_pid(pidfile)
    kill9(first)
    second = hb.run("run", "--name", "cron", "--", *cmd, timeout=30)
    assert second.returncode == 0, second
    assert count_lines(count) == 1
    assert "takeover" in names(hb.events("cron"))


def test_takeover_during_backoff_restarts_on_schedule(hb):
    count = hb.path("count")
    first = hb.start("run", "--name", "bo", "--no-self-heal", "--response-timeout", "0.5s", "--grace", "0.3s", "--backoff", "6s",
                     "--", *hb.agent("count:" + count, "cp:step-1", "hangfirst:1", "env:" + hb.path("env"), "exit:0"))
    wait_status(hb, "bo", "backoff", timeout=15)
    kill9(first)
    second = hb.run("watch", "bo", timeout=30)
    assert second.returncode == 0, second
    assert count_lines(count) == 2
    env = json.load(open(hb.path("env")))
    assert env["HBWRAP_ATTEMPT"] == "2" and env["HBWRAP_RESUME_FROM"] == "step-1"
    ev = names(hb.events("bo"))
    assert ev.index("restart") < ev.index("takeover") < ev.index("success"), ev


def test_takeover_during_kill_grace_finishes_the_kill(hb):
    count, pidfile = hb.path("count"), hb.path("pid")
    first = hb.start("run", "--name", "gr", "--no-self-heal", "--response-timeout", "0.5s", "--grace", "3s", "--backoff", "0.1s",
                     "--", *hb.agent("count:" + count, "ignoreterm", "pidfile:" + pidfile, "hangfirst:1", "exit:0"))
    stuck = read_pid(pidfile)
    assert wait_until(lambda: "kill" in names(hb.events("gr")), 10)
    kill9(first)
    second = hb.run("watch", "gr", timeout=30)
    assert second.returncode == 0, second
    assert not alive(stuck)
    assert count_lines(count) == 2
    ev = hb.events("gr")
    kills = [e["signal"] for e in ev if e["event"] == "kill"]
    assert kills[:2] == ["SIGTERM", "SIGKILL"], kills


def test_command_that_ended_while_unwatched_keeps_its_exit_code(hb):
    pidfile = hb.path("pid")
    first = hb.start("run", "--name", "late", "--no-self-heal", "--restart", "never",
                     "--", *hb.agent("pidfile:" + pidfile, "sleep:0.5", "exit:9"))
    child = read_pid(pidfile)
    first.send_signal(signal.SIGSTOP)  # the supervisor misses the exit...
    assert wait_until(lambda: not alive(child), 10)
    time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # ...and dies
    first.wait()
    second = hb.run("watch", "late", timeout=30)
    assert second.returncode == 9, second
    ev = hb.events("late")
    assert [e["exit_code"] for e in ev if e["event"] == "exit"] == [9]
    assert hb.status("late")[0]["status"] == "failed"


def test_hung_supervisor_is_killed_and_replaced(hb):
    count = hb.path("count")
    first = hb.start("run", "--name", "hung", "--no-self-heal", "--lease", "0.6s",
                     "--", *hb.agent("count:" + count, "numbered:25:0.1", "exit:4"))
    assert wait_until(lambda: count_lines(count) == 1)
    first.send_signal(signal.SIGSTOP)
    time.sleep(0.9)  # let the lease expire (the point of the test, not synchronisation)
    second = hb.run("run", "--name", "hung", "--", *hb.agent("count:" + count, "exit:0"), timeout=30)
    assert second.returncode == 4, second
    assert first.wait(timeout=10) == -signal.SIGKILL
    assert count_lines(count) == 1
    takeover = [e for e in hb.events("hung") if e["event"] == "takeover"]
    assert takeover and takeover[0]["killed_hung_supervisor"] == first.pid


def test_live_supervisor_with_fresh_lease_is_left_alone(hb):
    first = hb.start("run", "--name", "busy", "--", *hb.agent("sleep:3", "exit:0"))
    wait_status(hb, "busy", "running")
    watch = hb.run("watch", "busy")
    assert watch.returncode == 75, watch
    assert hb.run("run", "--name", "busy", "--if-running", "fail", "--", "true").returncode == 75
    skip = hb.run("run", "--name", "busy", "--", "true")
    assert skip.returncode == 0 and skip.err == "", skip
    assert first.poll() is None
    assert hb.finish(first).returncode == 0


def test_if_running_wait_runs_after_the_first(hb):
    order = hb.path("order")
    first = hb.start("run", "--name", "w", "--", "sh", "-c", f"echo first >> {order}; sleep 1.5")
    wait_status(hb, "w", "running")
    second = hb.run("run", "--name", "w", "--if-running", "wait", "--", "sh", "-c", f"echo second >> {order}")
    assert second.returncode == 0, second
    assert hb.finish(first).returncode == 0
    assert open(order).read().split() == ["first", "second"]


def test_six_simultaneous_starts_run_the_command_once(hb):
    count = hb.path("count")
    procs = [hb.start("run", "--name", "six", "--", *hb.agent("count:" + count, "sleep:1", "exit:0"))
             for _ in range(6)]
    results = [hb.finish(p) for p in procs]
    assert all(r.returncode == 0 for r in results), results
    assert count_lines(count) == 1


def test_stale_lock_file_does_not_block(hb):
    jobdir = hb.state_dir / "stale"
    jobdir.mkdir(parents=True, mode=0o700)
    (jobdir / "lock").write_text("12345\n")
    r = hb.run("run", "--name", "stale", "--", "true")
    assert r.returncode == 0, r


def _forge(hb, name, pid):
    with open(f"/proc/{pid}/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])
    state_file = job_file(hb, name, "state.json")
    state = json.loads(state_file.read_text())
    state.update(status="running", supervisor_pid=pid, supervisor_start=start, keeper_pid=pid,
                 keeper_start=start, child_pid=pid, child_start=start, lease_renewed_at=time.time(),
                 stop_reason="response", stop_started_at=state["started_at"])
    state_file.write_text(json.dumps(state))
    keeper_file = job_file(hb, name, "keeper.json")
    keeper = json.loads(keeper_file.read_text())
    keeper.update(keeper_pid=pid, keeper_start=start, child_pid=pid, child_start=start, exit_code=None,
                  ended_at=None, run_id=state["run_id"], attempt=state["attempt"])
    keeper_file.write_text(json.dumps(keeper))


@pytest.mark.parametrize("action", ["status", "stop", "watch", "run"])
def test_forged_state_never_signals_a_stranger(hb, action):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        assert hb.run("run", "--name", "forged", "--", "true").returncode == 0
        _forge(hb, "forged", stranger.pid)
        if action == "status":
            row = hb.status("forged")[0]
            assert row["status"] == "orphaned" and row["supervisor_pid"] is None and row["child_pid"] is None
        elif action == "run":
            hb.run("run", "--name", "forged", "--grace", "0.2s", "--", "true")
        else:
            r = hb.run(action, "forged")
            assert "Traceback" not in r.err, r
        time.sleep(0.3)
        assert stranger.poll() is None, "a stranger process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_corrupt_state_is_reported_and_never_signalled(hb):
    assert hb.run("run", "--name", "bad", "--", "true").returncode == 0
    job_file(hb, "bad", "state.json").write_text("{not json")
    row = hb.status("bad")[0]
    assert row["status"] == "unreadable"
    plain = hb.run("status")
    assert plain.returncode == 0 and "unreadable" in plain.out
    for cmd in (("watch", "bad"), ("stop", "bad")):
        r = hb.run(*cmd)
        assert r.returncode == 125 and "corrupt" in r.err and "Traceback" not in r.err, r
    r = hb.run("run", "--name", "bad", "--", "sh", "-c", "echo fresh")
    assert r.returncode == 0 and "fresh" in r.out, r
    assert list((hb.state_dir / "bad").glob("state.json.corrupt-*"))


def test_stop_a_live_job(hb):
    pidfile, count = hb.path("pid"), hb.path("count")
    first = hb.start("run", "--name", "live", "--grace", "0.5s", "--restart", "on-failure",
                     "--", *hb.agent("count:" + count, "ignoreterm", "pidfile:" + pidfile, "hang"))
    child = read_pid(pidfile)
    r = hb.run("stop", "live")
    assert r.returncode == 0, r
    assert first.wait(timeout=10) == 143
    assert not alive(child)
    assert count_lines(count) == 1
    assert hb.status("live")[0]["status"] == "stopped"
    assert names(hb.events("live"))[-1] == "stop"


def test_stop_an_orphaned_job(hb):
    pidfile = hb.path("pid")
    first = hb.start("run", "--name", "orph", "--no-self-heal", "--grace", "0.5s", "--", *hb.agent("pidfile:" + pidfile, "hang"))
    child = read_pid(pidfile)
    kill9(first)
    r = hb.run("stop", "orph")
    assert r.returncode == 0, r
    assert not alive(child)
    row = hb.status("orph")[0]
    assert row["status"] == "stopped" and row["exit_code"] == 143
    stop = [e for e in hb.events("orph") if e["event"] == "stop"]
    assert len(stop) == 1 and stop[0]["by"].startswith("hbwrap stop"), stop
    assert "stopped orph (hbwrap stop" in r.err, r  # not "on SIGTERM": nobody sent hbwrap a signal


def test_stop_unknown_and_idle_jobs(hb):
    assert hb.run("stop", "nosuch").returncode == 1
    assert hb.run("run", "--name", "done", "--", "true").returncode == 0
    assert hb.run("stop", "done").returncode == 0
    assert hb.run("watch", "done").returncode == 1
    assert hb.run("watch", "nosuch").returncode == 1


def test_keeper_and_supervisor_lost_stops_the_group_exit_125_with_restart_never(hb):
    pidfile = hb.path("pid")
    first = hb.start("run", "--name", "lost", "--no-self-heal", "--restart", "never", "--grace", "0.5s",
                     "--", *hb.agent("pidfile:" + pidfile, "hang"))
    child = read_pid(pidfile)
    keeper = json.loads(job_file(hb, "lost", "keeper.json").read_text())["keeper_pid"]
    kill9(first)
    os.kill(keeper, signal.SIGKILL)
    assert wait_until(lambda: not alive(keeper))
    assert alive(child)
    r = hb.run("watch", "lost", timeout=30)
    assert r.returncode == 125, r
    assert not alive(child)
    exits = [e for e in hb.events("lost") if e["event"] == "exit"]
    assert exits and exits[-1]["reason"] == "keeper lost", exits
    assert "lost its output capture" in r.err, r


def test_chaos_kill_the_supervisor_at_random_instants(hb):
    rng = random.Random(20261125)
    for round_no in range(20):
        name, count = f"chaos{round_no}", hb.path(f"count{round_no}")
        first = hb.start("run", "--name", name, "--no-self-heal", "--restart", "never",
                         "--", *hb.agent("count:" + count, "numbered:4:0.1", "exit:3"))
        time.sleep(rng.uniform(0.0, 0.9))  # the random instant is the point of this test
        first.send_signal(signal.SIGKILL)
        first.wait()
        watched = hb.run("watch", name, timeout=30)
        if watched.returncode == 1:  # nothing to take over: the first supervisor finished, or never began
            assert count_lines(count) in (0, 1), round_no
            rows = hb.status(name) if (hb.state_dir / name / "state.json").exists() else []
            if count_lines(count):
                assert wait_until(lambda: hb.status(name)[0]["status"] in ("failed", "orphaned"))
                row = hb.status(name)[0]
                if row["status"] == "orphaned":
                    pytest.fail(f"round {round_no}: watch found nothing but the job is orphaned: {rows}")
                assert row["exit_code"] == 3, (round_no, row)
        else:
            assert watched.returncode == 3, (round_no, watched)
            assert count_lines(count) == 1, round_no
        assert hb.leftovers() == [], round_no
