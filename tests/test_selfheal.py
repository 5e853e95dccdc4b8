"""Self-heal and what only real processes show: the keeper replaces a dead or hung supervisor with nobody else
to help, a slow reader of hbwrap's stdout holds nothing back, takeover decides from unread output, a lost
keeper is retried, a state.json of the wrong types is refused."""
import json
import os
import signal
import time

import pytest

from conftest import alive, names, read_pid, wait_until
from hbwrap.model import parse_iso


def event_file(hb, name):
    return hb.event_file(name)


def takeovers(hb, name, by=None):
    return [e for e in hb.event_file(name) if e["event"] == "takeover" and (by is None or e.get("by") == by)]


def current_supervisor(hb, name) -> int:
    return hb.state(name)["supervisor_pid"]


def final_status(hb, name, timeout=30):
    return wait_until(lambda: (s := hb.status(name)[0])["status"] in ("succeeded", "failed", "escalated",
                                                                       "stopped") and s,
                      timeout, what=f"the run of {name} to end", seen=lambda: hb.status(name)[0])


def count_lines(path):
    try:
        return len(open(path).read().split())
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_dead_supervisor_is_replaced_by_its_keeper(hb, sig):
    count, pidfile = hb.path("count"), hb.path("pid")
    first = hb.start("run", "--name", "heal", "--response-timeout", "5s",
                     "--", *hb.agent("count:" + count, "pidfile:" + pidfile, "numbered:30:0.1", "exit:7"))
    child = read_pid(pidfile)
    hb.wait_event("heal", "attempt_start")
    killed_at = time.time()
    first.send_signal(sig)
    first.wait()
    took = wait_until(lambda: takeovers(hb, "heal", "keeper"), 10, what="a takeover by the keeper",
                      seen=lambda: names(hb.event_file("heal")))[0]
    assert parse_iso(took["ts"]) - killed_at < 2.0, took
    assert alive(child) or hb.status("heal")[0]["status"] != "orphaned"
    row = final_status(hb, "heal")
    assert row["status"] == "failed" and row["exit_code"] == 7, row
    assert count_lines(count) == 1, "the command must run once"
    out = first.stdout.read().decode()  # the replacement wrote to the same stdout: every line, once
    for i in range(1, 31):
        assert out.count(f"line {i}\n") == 1, (i, out)


def test_a_hung_supervisor_is_replaced_within_lease_plus_2s(hb):
    pidfile = hb.path("pid")
    first = hb.start("run", "--name", "hang", "--lease", "1s", "--response-timeout", "30s",
                     "--", *hb.agent("pidfile:" + pidfile, "numbered:40:0.1", "exit:0"))
    read_pid(pidfile)
    hb.wait_event("hang", "attempt_start")
    stopped_at = time.time()
    first.send_signal(signal.SIGSTOP)
    took = wait_until(lambda: takeovers(hb, "hang", "keeper"), 10, what="a takeover by the keeper")[0]
    assert parse_iso(took["ts"]) - stopped_at < 1.0 + 2.0, took
    assert took["killed_hung_supervisor"] == first.pid
    assert first.wait(timeout=10) == -signal.SIGKILL
    assert final_status(hb, "hang")["status"] == "succeeded"


def test_after_three_replacements_the_fourth_death_leaves_the_job_orphaned(hb):
    pidfile = hb.path("pid")
    first = hb.start("run", "--name", "four", "--response-timeout", "30s",
                     "--", *hb.agent("pidfile:" + pidfile, "loop:0.1"))
    child = read_pid(pidfile)
    hb.wait_event("four", "attempt_start")
    first.send_signal(signal.SIGKILL)
    first.wait()
    for heal in range(1, 4):
        wait_until(lambda: len(takeovers(hb, "four", "keeper")) == heal, 10, what=f"replacement {heal}")
        sup = current_supervisor(hb, "four")
        os.kill(sup, signal.SIGKILL)
        wait_until(lambda: not alive(sup), 5)
    row = wait_until(lambda: (r := hb.status("four")[0])["status"] == "orphaned" and r, 5)
    time.sleep(1.5)  # time for a replacement the keeper must not start (the point of the test)
    assert len(takeovers(hb, "four", "keeper")) == 3
    assert hb.status("four")[0]["status"] == "orphaned" and alive(child), row
    assert "3 replacements used" in (hb.job_dir("four") / "keeper.err").read_text()
    stopped = hb.run("stop", "four")  # an operator can still end it
    assert stopped.returncode == 0, stopped
    assert not alive(child)


def test_without_self_heal_a_dead_supervisor_stays_dead(hb):
    pidfile = hb.path("pid")
    first = hb.start("run", "--name", "noheal", "--no-self-heal", "--",
                     *hb.agent("pidfile:" + pidfile, "loop:0.1"))
    child = read_pid(pidfile)
    hb.wait_event("noheal", "attempt_start")
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(1.5)  # a replacement would have come by now (the point of the test)
    assert takeovers(hb, "noheal") == []
    assert hb.status("noheal")[0]["status"] == "orphaned" and alive(child)


@pytest.mark.parametrize("turn", [2, 3])
def test_an_exception_in_the_supervisor_is_logged_and_its_keeper_replaces_it(hb, turn):
    # turn 2: the supervisor is dead before its keeper is even up, so no pidfd of it tells the keeper: it
    # must look at once, not a --lease (30 s) later
    r = hb.run("run", "--name", "crash", "--", *hb.agent("numbered:15:0.1", "exit:0"),
               env={**hb.env, "HBWRAP_FAULT": f"loop:{turn}"}, timeout=20)
    assert r.returncode == 1 and "Traceback" in r.err and "injected failure" in r.err, r
    crash = [e for e in hb.event_file("crash") if e["event"] == "supervisor_crash"]
    assert crash and "RuntimeError" in crash[0]["detail"], crash
    wait_until(lambda: takeovers(hb, "crash", "keeper"), 10)
    assert final_status(hb, "crash")["status"] == "succeeded"


def test_a_blocked_reader_of_stdout_holds_back_no_deadline(hb):
    # SPEC §9: hbwrap run ... | sleep 8 — nobody reads hbwrap's stdout; --timeout 3s still fires at 3 s
    read_end, write_end = os.pipe()
    try:
        first = hb.start("run", "--name", "slow", "--timeout", "3s", "--grace", "0.3s", "--restart", "never",
                         "--lease", "0.9s", "--", *hb.agent("bytes:3000000:1", "hang"), stdout=write_end)
        os.close(write_end)
        start = hb.wait_event("slow", "attempt_start")
        renewals = set()
        wait_until(lambda: renewals.add(hb.state("slow")["lease_renewed_at"]) or len(renewals) > 3, 2.5,
                   every=0.1, what="lease renewals while the reader is blocked")
        stall = hb.wait_event("slow", "stall", timeout=10)
        late = parse_iso(stall["ts"]) - parse_iso(start["ts"]) - 3.0
        assert stall["reason"] == "timeout" and late < 1.0, (late, stall)
    finally:
        os.close(read_end)  # the reader goes away: passthrough ends, the run can end
    r = hb.finish(first, timeout=20)
    assert r.returncode == 124, r
    assert "is slow" in r.err, r
    assert len(hb.log_bytes("slow")) == 3_000_000, "the log has every byte"


def test_a_slow_reader_gets_every_byte_in_order(hb):
    proc = hb.start("run", "--name", "lag", "--", *hb.agent("bytes:20000000:3", "exit:0"))
    time.sleep(1.0)  # the reader falls behind: passthrough must catch up from the log (the point of the test)
    got = proc.stdout.read()
    r = hb.finish(proc)
    assert r.returncode == 0, r
    assert got == hb.log_bytes("lag"), (len(got), len(hb.log_bytes("lag")))
    assert "passthrough lags" in r.err, r


def test_takeover_acts_on_the_fatal_line_and_checkpoint_written_while_unwatched(hb):
    go = hb.path("go")
    script = (f"echo checkpoint: first; while [ ! -e {go} ]; do sleep 0.05; done; "
              f"echo 'account suspended'; echo checkpoint: second; exit 1")
    first = hb.start("run", "--name", "unread", "--no-self-heal", "--restart", "on-failure", "--backoff", "0.1s",
                     "--fatal-pattern", "suspended", "--", "sh", "-c", script, hb.tag)
    wait_until(lambda: b"first" in (hb.log_bytes("unread") if (hb.job_dir("unread") / "output.log").exists()
                                    else b"") and hb.state("unread").get("checkpoint") == "first", 10)
    first.send_signal(signal.SIGKILL)
    first.wait()
    open(go, "w").close()  # the command goes on: a fatal line and a checkpoint nobody reads
    wait_until(lambda: b"second" in hb.log_bytes("unread"), 10)
    r = hb.run("watch", "unread", timeout=30)
    assert r.returncode == 1, r
    ev = hb.events("unread")
    assert ev[-1]["event"] == "escalate" and ev[-1]["reason"] == "fatal", ev[-1]
    assert ev[-1]["checkpoint"] == "second"
    assert names(ev).count("attempt_start") == 1, "a fatal failure is never retried"


def test_watch_sweeps_an_escaped_grandchild_when_keeper_and_command_are_gone(hb):
    daemon_file, pidfile = hb.path("daemon"), hb.path("pid")
    first = hb.start("run", "--name", "sweep", "--no-self-heal", "--restart", "never", "--grace", "0.3s",
                     "--", *hb.agent("pidfile:" + pidfile, "escape:" + daemon_file, "hang"))
    child = read_pid(pidfile)
    daemon = read_pid(daemon_file)
    keeper = json.loads((hb.job_dir("sweep") / "keeper.json").read_text())["keeper_pid"]
    first.send_signal(signal.SIGKILL)
    os.kill(keeper, signal.SIGKILL)
    wait_until(lambda: not alive(keeper), 5)
    os.kill(child, signal.SIGKILL)  # the main process goes too; its setsid grandchild lives on
    wait_until(lambda: not alive(child), 5)
    assert alive(daemon)
    r = hb.run("watch", "sweep", "--state-dir", str(hb.state_dir), timeout=30)
    assert not alive(daemon), "an escaped descendant outlived the run"
    assert r.returncode == 125, r
    exits = [e for e in hb.events("sweep") if e["event"] == "exit"]
    assert exits[-1]["reason"] == "keeper lost", exits


def test_a_lost_keeper_is_retried_from_the_checkpoint(hb):
    env_file, pidfile = hb.path("env"), hb.path("pid")
    first = hb.start("run", "--name", "klost", "--grace", "0.5s", "--backoff", "0.1s",
                     "--", *hb.agent("count:" + hb.path("count"), "pidfile:" + pidfile, "cp:step-1", "hangfirst:1",
                                     "env:" + env_file, "exit:0"))
    child = read_pid(pidfile)
    wait_until(lambda: hb.state("klost").get("checkpoint") == "step-1", 10)
    keeper = json.loads((hb.job_dir("klost") / "keeper.json").read_text())["keeper_pid"]
    os.kill(keeper, signal.SIGKILL)
    r = hb.finish(first, timeout=30)
    assert r.returncode == 0, r
    assert not alive(child)
    ev = hb.events("klost")
    exits = [e for e in ev if e["event"] == "exit"]
    assert exits[0]["reason"] == "keeper lost", exits
    restart = next(e for e in ev if e["event"] == "restart")
    assert restart["reason"] == "keeper lost" and restart["resume_from"] == "step-1", restart
    assert json.load(open(env_file))["HBWRAP_RESUME_FROM"] == "step-1"
    assert "lost its output capture" in r.err, r


@pytest.mark.parametrize("field, value", [("attempt", "two"), ("generation", None), ("started_at", 17),
                                          ("lease_s", "30")])
def test_a_state_file_of_the_wrong_types_is_unreadable_never_a_traceback(hb, field, value):
    assert hb.run("run", "--name", "typed", "--", "true").returncode == 0
    path = hb.job_dir("typed") / "state.json"
    doc = json.loads(path.read_text())
    doc.update(status="running", **{field: value})
    path.write_text(json.dumps(doc))
    row = hb.status("typed")[0]
    assert row["status"] == "unreadable" and field in row["error"], row
    for cmd in (("watch", "typed"), ("stop", "typed")):
        r = hb.run(*cmd)
        assert r.returncode == 125 and "Traceback" not in r.err and len(r.err.splitlines()) == 1, r
    r = hb.run("run", "--name", "typed", "--", "sh", "-c", "echo fresh")
    assert r.returncode == 0 and "fresh" in r.out, r
