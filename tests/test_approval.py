"""Restarts for jobs with side effects, with real processes: --restart-check, --restart-approval with
`hbwrap approve` / `hbwrap deny` (also after a SIGKILL of the supervisor), the default when nobody answers,
and what status, metrics and the webhook say meanwhile."""
import json
import os
import signal

from alertkit import Server
from conftest import alive, names, wait_until
from hbwrap.model import parse_iso

# the first attempt records a checkpoint and hangs (a stall at 0.5 s); the next one exits 0
STALL = ("--response-timeout", "0.5s", "--grace", "0.2s", "--backoff", "0.1s")


def stalls_once(hb):
    return hb.agent("count:" + hb.path("count"), "cp:post-drafted", "hangfirst:1", "exit:0")


def attempts(hb) -> int:
    try:
        return len(open(hb.path("count")).read().split())
    except FileNotFoundError:
        return 0


def ended(hb, name, timeout=20):
    return wait_until(lambda: (s := hb.status(name)[0])["status"] in ("succeeded", "failed", "escalated", "stopped")
                      and s, timeout, what=f"the run of {name} to end", seen=lambda: hb.status(name)[0])


# --- --restart-check -------------------------------------------------------------------------------

def test_a_passing_check_allows_the_restart_and_its_output_goes_to_the_event_log(hb):
    seen = hb.path("seen")
    check = (f'printf "%s|%s|%s|%s" "$HBWRAP_RESUME_FROM" "$HBWRAP_EVENT" "$HBWRAP_REASON" "$HBWRAP_ATTEMPT" > {seen};'
             ' echo "no post yet at https://user:s3cretpw@api.example.org/posts?token=abc123"; exit 0')
    r = hb.run("run", "--name", "chk", *STALL, "--restart-check", check, "--", *stalls_once(hb))
    assert r.returncode == 0, r
    assert attempts(hb) == 2
    assert open(seen).read() == "post-drafted|restart_check|stall|1", "the check sees HBWRAP_RESUME_FROM"
    ev = hb.events("chk")
    assert names(ev)[-5:] == ["restart", "restart_check", "attempt_start", "exit", "success"], names(ev)
    done = next(e for e in ev if e["event"] == "restart_check")
    assert done["passed"] is True and done["exit_code"] == 0 and "no post yet" in done["output"], done
    assert "s3cretpw" not in json.dumps(ev) and "abc123" not in json.dumps(ev), "URLs in its output are masked"
    assert ev[-3]["resume_from"] == "post-drafted"


def test_a_failing_check_escalates_unsafe_and_is_not_retried(hb):
    check = 'echo "the post is already up: https://example.org/p/42"; exit 3'
    r = hb.run("run", "--name", "unsafe", *STALL, "--restart-check", check, "--", *stalls_once(hb))
    assert r.returncode == 124, r
    assert attempts(hb) == 1, "the command must not run again"
    ev = hb.events("unsafe")
    done = next(e for e in ev if e["event"] == "restart_check")
    assert done["passed"] is False and done["exit_code"] == 3 and "already up" in done["output"], done
    assert ev[-1]["event"] == "escalate" and ev[-1]["reason"] == "unsafe" and ev[-1]["stall"] == "response", ev[-1]
    assert "--restart-check of unsafe exited with code 3: not restarting" in r.err, r
    assert names(ev).count("restart_check") == 1


def test_the_check_never_blocks_supervision_and_a_stop_kills_it(hb):
    started = hb.path("started")
    check = f"echo $$ > {started}; exec sleep 300"
    proc = hb.start("run", "--name", "slowchk", *STALL, "--lease", "0.9s", "--restart-check", check,
                    "--", *stalls_once(hb))
    pid = int(wait_until(lambda: os.path.exists(started) and open(started).read().strip(), 15,
                         what="the check to start"))
    renewals = set()
    wait_until(lambda: renewals.add(hb.state("slowchk")["lease_renewed_at"]) or len(renewals) > 2, 5, every=0.1,
               what="lease renewals while the check runs")
    row = hb.status("slowchk")[0]
    assert row["status"] == "backoff" and row["next_deadline"] == "restart-check", row
    proc.send_signal(signal.SIGTERM)
    r = hb.finish(proc)
    assert r.returncode == 128 + signal.SIGTERM, r
    wait_until(lambda: not alive(pid), 5, what="the check to be killed")


# --- --restart-approval ----------------------------------------------------------------------------

def pending(hb, name, timeout=15):
    """The restart_pending event, once the run state says so too: the supervisor records the event first
    (a crash between the two makes its replacement ask again rather than lose the alert), then the state."""
    asked = hb.wait_event(name, "restart_pending", timeout)
    wait_until(lambda: hb.status(name)[0]["status"] == "awaiting-approval", timeout, what="status awaiting-approval")
    return asked


def test_approve_restarts_at_once(hb):
    proc = hb.start("run", "--name", "ok", *STALL, "--restart-approval", "30s", "--", *stalls_once(hb))
    asked = pending(hb, "ok")
    assert asked["delay_s"] == 30.0 and asked["approval_default"] == "abort" and asked["host"], asked
    row = hb.status("ok")[0]
    assert row["status"] == "awaiting-approval" and row["approval_pending"] is True, row
    assert row["approval_until"] == asked["approve_by"] and row["next_deadline"] == "approval", row
    assert row["approve_command"] == "hbwrap approve ok"
    metrics = hb.run("metrics").out
    assert 'hbwrap_status{job_name="ok",status="awaiting-approval"} 1' in metrics
    assert 'hbwrap_approval_deadline_timestamp_seconds{job_name="ok"}' in metrics
    text = hb.run("status").out
    assert "awaiting-approval" in text and "approval in" in text, text
    a = hb.run("approve", "ok")
    assert a.returncode == 0 and len(a.out.splitlines()) == 1 and "approved the restart of job ok" in a.out, a
    r = hb.finish(proc)
    assert r.returncode == 0, r
    ev = hb.events("ok")
    approved = next(e for e in ev if e["event"] == "approved")
    assert approved["by"].count("@") == 1, approved
    second = [e for e in ev if e["event"] == "attempt_start"][1]
    assert parse_iso(second["ts"]) - parse_iso(approved["ts"]) < 1.0
    assert second["resume_from"] == "post-drafted" and attempts(hb) == 2
    assert "hbwrap approve ok" in r.err and "hbwrap deny ok" in r.err, r


def test_deny_escalates(hb):
    proc = hb.start("run", "--name", "no", *STALL, "--restart-approval", "30s", "--", *stalls_once(hb))
    pending(hb, "no")
    d = hb.run("deny", "no")
    assert d.returncode == 0 and "denied the restart of job no" in d.out, d
    r = hb.finish(proc)
    assert r.returncode == 124, r
    ev = hb.events("no")
    assert names(ev)[-3:] == ["restart_pending", "denied", "escalate"] and ev[-1]["reason"] == "denied", names(ev)
    assert attempts(hb) == 1 and hb.status("no")[0]["approval_pending"] is False


def test_no_answer_aborts_by_default(hb):
    r = hb.run("run", "--name", "quiet", *STALL, "--restart-approval", "1s", "--", *stalls_once(hb))
    assert r.returncode == 124, r
    ev = hb.events("quiet")
    assert ev[-1]["event"] == "escalate" and ev[-1]["reason"] == "no approval", ev[-1]
    waited = parse_iso(ev[-1]["ts"]) - parse_iso(ev[-2]["ts"])
    # the window counts from the decision; the event's stamp (milliseconds) is taken a moment after it
    assert ev[-2]["event"] == "restart_pending" and 0.99 <= waited < 2.0, (waited, ev[-2:])
    assert attempts(hb) == 1


def test_no_answer_restarts_with_approval_default_restart(hb):
    r = hb.run("run", "--name", "dflt", *STALL, "--restart-approval", "1s", "--approval-default", "restart",
               "--", *stalls_once(hb))
    assert r.returncode == 0, r
    ev = hb.events("dflt")
    restart = next(e for e in ev if e["event"] == "restart")
    assert restart["approved_by"] == "--approval-default restart", restart
    assert attempts(hb) == 2


def test_approve_after_sigkill_of_the_supervisor_reaches_its_replacement(hb):
    first = hb.start("run", "--name", "heal", *STALL, "--restart-approval", "30s", "--", *stalls_once(hb))
    asked = pending(hb, "heal")
    first.send_signal(signal.SIGKILL)
    first.wait()
    took = wait_until(lambda: [e for e in hb.event_file("heal") if e["event"] == "takeover"], 10,
                      what="the keeper's replacement", seen=lambda: names(hb.event_file("heal")))[0]
    assert took["by"] == "keeper" and took["detail"] == "the run's restart was waiting for approval", took
    row = hb.status("heal")[0]
    # the same instant; its millisecond may differ, as the replacement converts it to its own clock and back
    assert row["status"] == "awaiting-approval", row
    assert abs(parse_iso(row["approval_until"]) - parse_iso(asked["approve_by"])) <= 0.002, (row, asked)
    a = hb.run("approve", "heal")
    assert a.returncode == 0 and "took the answer" in a.out, a
    row = ended(hb, "heal")
    assert row["status"] == "succeeded" and attempts(hb) == 2, row


def test_an_answer_given_while_no_supervisor_holds_the_job_applies_at_the_takeover(hb):
    first = hb.start("run", "--name", "later", "--no-self-heal", *STALL, "--restart-approval", "30s",
                     "--", *stalls_once(hb))
    pending(hb, "later")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert hb.status("later")[0]["status"] == "orphaned"
    d = hb.run("deny", "later")
    assert d.returncode == 0 and "no live supervisor" in d.out and "hbwrap watch later" in d.out, d
    r = hb.run("watch", "later")
    assert r.returncode == 124, r
    ev = hb.events("later")
    assert names(ev)[-3:] == ["takeover", "denied", "escalate"] and ev[-1]["reason"] == "denied", names(ev)


def test_a_check_running_when_its_supervisor_dies_is_killed_and_asked_again(hb):
    pids = hb.path("checks")
    check = f"echo $$ >> {pids}; sleep 2; exit 0"
    first = hb.start("run", "--name", "again", "--no-self-heal", *STALL, "--restart-check", check,
                     "--", *stalls_once(hb))
    old = int(wait_until(lambda: os.path.exists(pids) and open(pids).read().split(), 15)[0])
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert alive(old)
    r = hb.run("watch", "again")
    assert r.returncode == 0, r
    assert not alive(old), "the orphaned check is killed by the takeover"
    assert len(open(pids).read().split()) == 2 and attempts(hb) == 2


def test_stop_ends_a_wait_for_approval_also_without_a_supervisor(hb):
    first = hb.start("run", "--name", "halt", "--no-self-heal", *STALL, "--restart-approval", "30s",
                     "--", *stalls_once(hb))
    pending(hb, "halt")
    first.send_signal(signal.SIGKILL)
    first.wait()
    r = hb.run("stop", "halt")
    assert r.returncode == 0, r
    row = hb.status("halt")[0]
    assert row["status"] == "stopped" and row["approval_pending"] is False, row
    assert names(hb.events("halt"))[-3:] == ["restart_pending", "takeover", "stop"]
    assert hb.run("approve", "halt").returncode == 1


def test_approve_and_deny_with_nothing_pending_exit_1(hb):
    for verb in ("approve", "deny"):
        r = hb.run(verb, "ghost")
        assert r.returncode == 1 and r.err.startswith("hbwrap: no job named") and r.out == "", r
    assert hb.run("run", "--name", "done", "--", "true").returncode == 0
    for verb in ("approve", "deny"):
        r = hb.run(verb, "done")
        assert r.returncode == 1 and len(r.err.splitlines()) == 1, r
        assert "no restart waiting for approval (status succeeded)" in r.err, r
    assert not (hb.job_dir("done") / "approval.json").exists()


def test_an_answer_after_the_window_closed_is_refused(hb):
    first = hb.start("run", "--name", "late", "--no-self-heal", *STALL, "--restart-approval", "1s",
                     "--", *stalls_once(hb))
    pending(hb, "late")
    # the event is written before state.json is: the kill must not come between the two
    wait_until(lambda: hb.state("late").get("approval_until"), 5)
    first.send_signal(signal.SIGKILL)  # nobody applies the default: the record still says awaiting-approval
    first.wait()
    wait_until(lambda: parse_iso(hb.state("late")["approval_until"]) < __import__("time").time(), 5)
    r = hb.run("approve", "late")
    assert r.returncode == 1 and "approval window of job late closed" in r.err, r
    w = hb.run("watch", "late")
    assert w.returncode == 124 and hb.events("late")[-1]["reason"] == "no approval", w


def test_the_restart_pending_alert_says_what_to_run_and_where(hb):
    hook = Server()
    try:
        proc = hb.start("run", "--name", "post-0300", *STALL, "--restart-approval", "30m", "--host", "web-1",
                        "--alert-webhook", hook.url("/hooks/T0/B0/secretToken99"), "--webhook-format", "slack",
                        "--", *stalls_once(hb))
        pending(hb, "post-0300")
        bodies = [json.loads(x["body"]) for x in hook.got(2)]  # the stall, then the restart_pending
        body = next(b for b in bodies if "approval" in b["text"])
        assert hb.run("deny", "post-0300").returncode == 0
        assert hb.finish(proc).returncode == 124
    finally:
        hook.stop()
    text = body["text"]
    assert "post-0300 waits for approval to restart" in text, text
    assert "run `hbwrap approve post-0300` to restart now or `hbwrap deny post-0300` to give up" in text, text
    assert "on host web-1" in text and "(30m window)" in text and "without an answer it gives up" in text, text
    print(text)  # the README's recipe quotes this
