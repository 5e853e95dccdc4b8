"""The Alerter as the supervisor's one poll loop uses it, and the texts of the approval, lease and incident events.

The loop never blocks (SPEC §9): it polls `fileno()`, asks `in_flight()` and ends with `abandon()`; these
tests drive it exactly so, with real loopback servers and real alert commands.
"""
from __future__ import annotations

import json
import select
import time
from pathlib import Path

from alertkit import ev, json_body, local_ts, wait_for
from conftest import alive
from hbwrap.alerts.messages import summarize, webhook_body
from hbwrap.options import parse_alert_on


def readable(fd: int, timeout_s: float) -> bool:
    return bool(select.select([fd], [], [], timeout_s)[0])


# --- the wake-up pipe and closing without blocking -------------------------------------------------------

def test_fileno_becomes_readable_when_a_delivery_finishes(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[srv.url()])
    fd = alerter.fileno()
    assert fd >= 0 and not readable(fd, 0)
    alerter.notify(ev("stall"))
    assert readable(fd, 5), "a finished delivery wakes the loop"
    srv.got(1)
    alerter.drain_wakeups()
    assert not readable(fd, 0), "drained"
    alerter.close(5)


def test_a_poll_loop_waits_for_deliveries_through_fileno_then_releases_it(h, servers):
    slow, ping = servers(replies=[500]), servers()  # one retry: the webhook takes a back-off before it goes through
    alerter = h.make(webhooks=[slow.url()], ping_url=ping.url("/ping/x"), backoff_s=0.2)
    alerter.notify(ev("run_start"))
    alerter.notify(ev("escalate", exit_code=124, reason="stall"))
    alerter.begin_close()
    alerter.notify(ev("stall"))  # after begin_close: not sent
    assert alerter.in_flight()
    started = time.monotonic()
    wakeups = 0
    while alerter.in_flight() and time.monotonic() - started < 10:
        if readable(alerter.fileno(), 0.1):
            wakeups += 1
            alerter.drain_wakeups()
    assert not alerter.in_flight() and wakeups >= 1
    alerter.abandon(time.monotonic() - started)
    assert h.records == [] and alerter.fileno() == -1
    assert [r["path"] for r in slow.requests] == ["/hook", "/hook"]
    assert [r["path"].split("?")[0] for r in ping.requests] == ["/ping/x/start", "/ping/x/124"]
    alerter.close(5)  # after abandon: nothing left to do
    assert h.records == []


def test_abandon_records_every_delivery_still_queued_or_running_and_kills_the_alert_command(h, servers, tmp_path):
    hung = servers(default="sleep")
    pidfile = tmp_path / "sh.pid"
    warnings: list[str] = []
    alerter = h.make(webhooks=[hung.url()], alert_cmd=f"echo $$ >> {pidfile}; exec sleep 60", cmd_timeout_s=30,
                     warn=warnings.append)
    alerter.notify(ev("stall"))
    alerter.notify(ev("escalate", exit_code=124, reason="stall"))
    hung.got(1)
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().split()[0], what="alert command pid"))
    wait_for(lambda: alerter.own_pids == {pid}, what="alert command tracked")
    alerter.begin_close()
    assert not readable(alerter.fileno(), 0.3) and alerter.in_flight()
    started = time.monotonic()
    alerter.abandon(10.0)
    assert time.monotonic() - started < 1.0, "abandon never waits for a delivery"
    assert sorted((r["channel"], r["alert_event"]) for r in h.records) == [
        ("alert-cmd", "escalate"), ("alert-cmd", "stall"), ("webhook", "escalate"), ("webhook", "stall")]
    assert {r["reason"] for r in h.records} == {"timeout at exit (still in flight after 10s)"}
    wait_for(lambda: not alive(pid), 3.0, "the alert command killed")
    assert len(warnings) == 2 and all("timeout at exit" in w for w in warnings), warnings
    assert not alerter.in_flight() and alerter.fileno() == -1
    alerter.notify(ev("stall"))
    assert len(h.records) == 4 and len(hung.requests) == 1  # closed: nothing new, no record twice


# --- the new events ------------------------------------------------------------------------------------

def pending(**fields) -> dict:
    return ev("restart_pending", ts=local_ts(2, 13), attempt=2, checkpoint="page-42", delay_s=1800,
              approve_by=local_ts(2, 43), host="web-1", detail="stalled (response)", **fields)


def test_restart_pending_says_what_to_run_where_and_by_when():
    text = summarize(pending())
    assert text.startswith("reddit-3am waits for approval to restart at 02:13, attempt 2, checkpoint page-42: ")
    assert ("run `hbwrap approve reddit-3am` to restart now or `hbwrap deny reddit-3am` to give up, "
            "on host web-1, before 02:43 (30m window)") in text, text
    assert text.endswith("stalled (response)")
    assert "without an answer it restarts" in summarize(pending(approval_default="restart"))


def test_restart_pending_alerts_by_default_in_every_format_and_pings_log(h, servers, hc):
    hooks = {fmt: servers() for fmt in ("json", "slack", "discord")}
    server = hc()
    alerters = [h.make(webhooks=[srv.url()], webhook_format=fmt) for fmt, srv in hooks.items()]
    alerters.append(h.make(ping_url=server.url))
    for alerter in alerters:
        alerter.notify(pending())
    body = json_body(hooks["json"].got(1)[0])
    assert body["approve_command"] == "hbwrap approve reddit-3am" and body["deny_command"] == "hbwrap deny reddit-3am"
    assert body["host"] == "web-1" and body["delay_s"] == 1800 and body["approve_by"] == local_ts(2, 43)
    assert "hbwrap approve reddit-3am" in json_body(hooks["slack"].got(1)[0])["text"]
    content = json_body(hooks["discord"].got(1)[0])["content"]
    assert "hbwrap deny reddit-3am" in content and "web-1" in content
    (ping,) = server.wait_pings(1)
    assert ping.kind == "log" and b"hbwrap: attempt 2 waits for approval to restart: run `hbwrap approve" in ping.body
    for alerter in alerters:
        alerter.close(5)
    assert h.records == []


def test_approved_denied_and_lease_lost_texts(h, servers, hc):
    assert summarize(ev("approved", ts=local_ts(2, 20), by="alice@web-1")).startswith(
        "reddit-3am restart approved by alice@web-1 at 02:20")
    assert summarize(ev("denied", ts=local_ts(2, 20), by="bob@laptop")).startswith(
        "reddit-3am restart denied by bob@laptop at 02:20")
    lost = ev("lease_lost", ts=local_ts(2, 21), detail="could not renew the lease in 10s: connection refused")
    assert summarize(lost).startswith("reddit-3am lost its lease at 02:21, attempt 1: could not renew the lease")
    srv, server = servers(), hc()
    alerter = h.make(webhooks=[srv.url()], webhook_format="slack", ping_url=server.url,
                     alert_on=parse_alert_on("approved,denied,lease_lost"))
    for name in ("approved", "denied"):
        alerter.notify(ev(name, by="alice@web-1"))
    alerter.notify(lost)
    texts = [json_body(r)["text"] for r in srv.got(3)]
    assert "approved by alice@web-1" in texts[0] and "denied" in texts[1] and "lost its lease" in texts[2]
    (ping,) = server.wait_pings(1)  # approved and denied ping nothing; a lost lease is said on the run's check
    assert ping.kind == "log" and b"could not renew the lease" in ping.body
    alerter.close(5)


def test_alert_on_accepts_the_new_events():
    assert parse_alert_on("restart_pending,approved,denied,lease_lost") == (
        "restart_pending", "approved", "denied", "lease_lost")
    assert {"restart_pending", "approved", "denied", "lease_lost"} <= set(parse_alert_on("all"))


def stall_with_incident(n_procs: int = 3) -> dict:
    lines = [f"pid {100 + i} chrome-{i} S futex_wait_queue {i}% cpu, tcp: 2 ESTABLISHED 1 CLOSE_WAIT" for i in
             range(n_procs)]
    return ev("stall", reason="response", detail="no sign of life for 120s", incident="r1-a2",
              incident_path="/state/reddit-3am/incidents/r1-a2.json", incident_summary="\n".join(lines))


def test_a_stall_with_an_incident_shows_its_processes_bounded_in_every_format(h):
    tail = b"loading page 42...\n"
    event = stall_with_incident()
    summary = summarize(event)
    assert "incident r1-a2 (`hbwrap incident reddit-3am`)" in summary
    body = webhook_body("json", event, summary, tail)
    assert body["incident_summary"].splitlines()[0].startswith("pid 100 chrome-0 S futex_wait_queue")
    assert body["incident_path"] == "/state/reddit-3am/incidents/r1-a2.json"
    slack = webhook_body("slack", event, summary, tail)["text"]
    assert "```\npid 100 chrome-0" in slack and slack.endswith("loading page 42...\n```")
    assert "pid 102 chrome-2" in webhook_body("discord", event, summary, tail)["content"]
    huge = stall_with_incident(50)
    huge["incident_summary"] = "\n".join(line + " x" * 300 for line in huge["incident_summary"].split("\n"))
    for fmt in ("json", "slack", "discord"):
        text = json.dumps(webhook_body(fmt, huge, summarize(huge), tail * 500))
        assert len(text) < 12_000, (fmt, len(text))
    lines = webhook_body("json", huge, summarize(huge), None)["incident_summary"].splitlines()
    assert len(lines) == 8 and lines[-1] == "… 43 more" and all(len(line) <= 160 for line in lines)
    assert len(webhook_body("discord", huge, summarize(huge), tail * 500)["content"]) <= 2000


def test_the_alert_command_gets_the_incident_path(h, tmp_path):
    out = tmp_path / "incident.txt"
    alerter = h.make(alert_cmd=f'printf "%s" "$HBWRAP_INCIDENT" > {out}',
                     env={"PATH": "/usr/bin:/bin", "HBWRAP_INCIDENT": "/inherited/one"})
    alerter.notify(stall_with_incident())
    assert wait_for(lambda: out.exists() and out.read_text()) == "/state/reddit-3am/incidents/r1-a2.json"
    out.unlink()
    alerter.notify(ev("escalate", reason="stall"))  # no incident: nothing inherited either
    alerter.close(5)
    assert out.read_text() == "" and h.records == []


def test_events_the_delivery_threads_report_are_written_by_the_loop_once_each(tmp_path):
    """alert_failed and alert_output come from delivery threads: they wait for the loop, which alone appends to
    events.jsonl (two threads appending through its backlog at once lost or doubled lines, or crashed)."""
    import threading

    from fakes import FakeClock
    from hbwrap import policy
    from hbwrap.jobstore import JobDir
    from hbwrap.journal import Journal
    from hbwrap.model import Event, RunRecord
    from hbwrap.options import build_run_options

    job_dir = tmp_path / "job"
    job_dir.mkdir(mode=0o700)
    job = JobDir(job_dir, "job")

    class Passthrough:
        def message(self, text):
            pass

    opts = build_run_options(command=["true"], name="job", state_dir=str(tmp_path), alert_cmd="true")
    journal = Journal(job, FakeClock(), opts, Passthrough())
    journal.st = policy.RunState(RunRecord(name="job", run_id="r1", attempt=1))
    journal.start_alerts(lambda n: b"")
    record, delivered = journal.alerter._record, journal.alerter._delivered
    try:
        def report(thread: int, n: int) -> None:
            for i in range(n):
                record({"channel": "webhook", "error": f"t{thread}-{i}"})
                delivered({"channel": "alert-cmd", "alert_event": "stall", "output": f"o{i}"})

        threads = [threading.Thread(target=report, args=(k, 150)) for k in range(4)]
        for t in threads:
            t.start()
        for i in range(300):
            journal.emit(Event.CHECKPOINT, checkpoint=str(i))
            journal.alert_news()
        for t in threads:
            t.join()
        journal.alert_news()
    finally:
        journal.alerter.close(1.0)
    lines = Path(job.events_file).read_text().splitlines()
    events = [json.loads(line) for line in lines]
    kinds = [e["event"] for e in events]
    assert kinds.count("alert_failed") == 600 and kinds.count("alert_output") == 600, kinds[:20]
    assert [e["checkpoint"] for e in events if e["event"] == "checkpoint"] == [str(i) for i in range(300)]
    assert len({line for line in lines if '"alert_failed"' in line}) == 600, "no line twice"
