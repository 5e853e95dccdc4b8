"""Alerts end to end through `hbwrap run`: a real loopback webhook and ping server, the CLI's options."""
import json
import os
import sys
import time
import urllib.parse

from conftest import wait_until
from hcfake import FakeHealthchecks
from alertkit import Server, free_port


def test_stall_and_recovery_reach_the_webhook_and_pings_follow_the_protocol(hb):
    hook, ping = Server(), Server()
    try:
        count = hb.path("count")
        secret_hook = hook.url("/services/T000/B000/s3cr3tT0ken42")
        r = hb.run("run", "--name", "e2e", "--response-timeout", "0.7s", "--grace", "0.3s", "--backoff", "0.1s",
                   "--alert-webhook", secret_hook, "--webhook-format", "slack", "--ping-url", ping.url("/ping/abc"),
                   "--", *hb.agent("count:" + count, "cp:page-42", "hangfirst:1", "print:done", "exit:0"))
        assert r.returncode == 0, r
        hook_bodies = [json.loads(x["body"]) for x in hook.got(2)]
        texts = [b["text"] for b in hook_bodies]
        assert any("stall" in t and "e2e" in t for t in texts), texts
        assert any("recovered" in t and "page-42" in t for t in texts), texts
        paths = [urllib.parse.urlsplit(x["path"]) for x in ping.got(3)]
        assert [p.path for p in paths][:1] == ["/ping/abc/start"]
        assert "/ping/abc/log" in [p.path for p in paths]          # the stall
        assert [p.path for p in paths][-1] == "/ping/abc/0"          # success, exit code 0
        rids = {urllib.parse.parse_qs(p.query)["rid"][0] for p in paths}
        assert len(rids) == 1
        assert b"done" in ping.requests[-1]["body"]                # the output tail
        everything = r.err + hb.run("events", "e2e", "--json").out + hb.run("status", "--json").out
        assert "s3cr3tT0ken42" not in everything
    finally:
        hook.stop()
        ping.stop()


def test_a_dead_webhook_never_changes_the_result_and_is_recorded_masked(hb):
    port = free_port()
    started = time.monotonic()
    r = hb.run("run", "--name", "dead", "--alert-webhook", f"http://127.0.0.1:{port}/hooks/tok3nS3cretValue",
               "--alert-on", "all", "--", "sh", "-c", "exit 3")
    assert r.returncode == 3, r
    assert time.monotonic() - started < 15, "hbwrap waits at most 10 s for alerts in flight"
    failed = [e for e in hb.events("dead") if e["event"] == "alert_failed"]
    assert failed, "a refused webhook must be logged as alert_failed"
    assert all("tok3nS3cretValue" not in json.dumps(e) for e in failed)


def test_alert_cmd_gets_the_event_in_its_environment_never_in_its_text(hb):
    out, marker = hb.path("alert.env"), hb.path("pwned")
    r = hb.run("run", "--name", "cmd", "--response-timeout", "0.5s", "--grace", "0.2s", "--restart", "never",
               "--alert-cmd", f'printf "%s|%s|%s" "$HBWRAP_EVENT" "$HBWRAP_REASON" "$HBWRAP_CHECKPOINT" >> {out}',
               "--", *hb.agent(f"cp:$(touch {marker})", "hang"))
    assert r.returncode == 124, r
    text = open(out).read()
    assert f"stall|response|$(touch {marker})" in text, text
    assert not os.path.exists(marker)


def test_alert_cmd_output_goes_to_the_event_log_bounded_and_masked(hb):
    secret = "http://127.0.0.1:9/hooks/Tok3nInTheOutput99"
    # prints a line, a URL with a token and 10 KB more: kept as the last 4 KB, the token masked
    cmd = f'echo "sent for $HBWRAP_EVENT"; echo "{secret}"; head -c 10000 /dev/zero | tr "\\0" x; echo'
    r = hb.run("run", "--name", "cmdout", "--alert-on", "success,exit", "--alert-cmd", cmd, "--", "true")
    assert r.returncode == 0, r
    events = hb.events("cmdout")
    outputs = [e for e in events if e["event"] == "alert_output"]
    assert sorted(e["alert_event"] for e in outputs) == ["exit", "success"], events
    assert all(e["channel"] == "alert-cmd" for e in outputs)
    assert all(len(e["output"]) <= 4096 for e in outputs)
    assert "alert_failed" not in [e["event"] for e in events]
    assert "Tok3nInTheOutput99" not in json.dumps(events)


def test_alert_cmd_failure_keeps_its_output_in_alert_failed_and_silent_success_adds_nothing(hb):
    r = hb.run("run", "--name", "cmdfail", "--alert-on", "all", "--alert-cmd",
               'if [ "$HBWRAP_EVENT" = success ]; then echo "smtp said no" >&2; exit 7; fi', "--", "true")
    assert r.returncode == 0, r  # a failing alert command never changes the run's result
    events = hb.events("cmdfail")
    failed = [e for e in events if e["event"] == "alert_failed"]
    assert len(failed) == 1, events
    assert failed[0]["alert_event"] == "success" and failed[0]["cmd_exit_code"] == 7
    assert "smtp said no" in failed[0]["output"]
    assert "alert_output" not in [e["event"] for e in events]  # the others printed nothing


# --- pings as a healthchecks server records them (issue 11) ------------------------------------------

def ping_summary(server: FakeHealthchecks) -> list[tuple[str, int | None]]:
    return [(p.kind, p.exitstatus) for p in server.pings]


def final_line(body: bytes) -> str:
    return body.decode().rstrip("\n").rsplit("\n", 1)[-1]


def test_pings_tell_the_server_the_exit_code_and_what_happened(hb):
    ok, three, stalled = FakeHealthchecks(), FakeHealthchecks(), FakeHealthchecks()
    try:
        r = hb.run("run", "--name", "ok", "--ping-url", ok.url, "--", *hb.agent("print:all good", "exit:0"))
        assert r.returncode == 0, r
        r = hb.run("run", "--name", "three", "--ping-url", three.url, "--",
                   *hb.agent("print:something went wrong", "exit:3"))
        assert r.returncode == 3, r
        r = hb.run("run", "--name", "stalled", "--ping-url", stalled.url, "--response-timeout", "0.5s",
                   "--grace", "0.2s", "--restart", "never", "--", *hb.agent("print:waiting", "hang"))
        assert r.returncode == 124, r
        assert ping_summary(ok) == [("start", None), ("success", 0)] and ok.check.status == "up"
        assert ping_summary(three) == [("start", None), ("fail", 3)] and three.check.status == "down"
        assert ping_summary(stalled) == [("start", None), ("log", None), ("fail", 124)]
        assert final_line(ok.pings[-1].body) == "hbwrap: exit code 0 after 1 attempt: succeeded"
        assert three.pings[-1].body.startswith(b"something went wrong\nhbwrap: exit code 3 after 1 attempt: failed")
        assert final_line(stalled.pings[-1].body) == (
            "hbwrap: exit code 124 after 1 attempt: gave up (stall), last stall: response")
        assert all(len(s.check.durations) == 1 for s in (ok, three, stalled))
    finally:
        for server in (ok, three, stalled):
            server.stop()


def test_command_not_found_still_pings_what_happened(hb):
    server = FakeHealthchecks()
    try:
        r = hb.run("run", "--name", "nosuch", "--ping-url", server.url, "--", "/nonexistent/command")
        assert r.returncode == 127, r
        assert ping_summary(server) == [("start", None), ("fail", 127)]
        assert final_line(server.pings[-1].body).startswith(
            "hbwrap: exit code 127 after 1 attempt: gave up (command not found)")
    finally:
        server.stop()


def test_hbwrap_stop_closes_the_run_on_the_server_with_143(hb):
    server = FakeHealthchecks()
    try:
        proc = hb.start("run", "--name", "stopme", "--ping-url", server.url, "--", *hb.agent("ready", "hang"))
        log = hb.job_dir("stopme") / "output.log"
        wait_until(lambda: log.exists() and b"READY" in log.read_bytes(), what="the command's READY")
        assert hb.run("stop", "stopme").returncode == 0
        assert hb.finish(proc).returncode == 143
        assert ping_summary(server) == [("start", None), ("fail", 143)]
        assert final_line(server.pings[-1].body).startswith("hbwrap: exit code 143 after 1 attempt: stopped")
    finally:
        server.stop()


def test_utf8_output_without_newlines_reaches_a_keyword_filtering_check(hb):
    server = FakeHealthchecks(filter_body=True, success_kw="FINAL")
    try:
        code = 'import sys; sys.stdout.buffer.write("\u00e9".encode() * 30000 + b"FINAL")'
        r = hb.run("run", "--name", "utf8", "--ping-url", server.url, "--", sys.executable, "-c", code, hb.tag)
        assert r.returncode == 0, r
        assert server.errors == [] and server.pings[-1].kind == "success" and server.check.status == "up"
        assert "alert_failed" not in [e["event"] for e in hb.events("utf8")]
    finally:
        server.stop()


def test_a_larger_server_limit_carries_50kb_of_output(hb):
    server = FakeHealthchecks(ping_body_limit=100_000)
    try:
        r = hb.run("run", "--name", "big", "--ping-url", server.url, "--", *hb.agent("numbered:6000:0", "exit:1"))
        assert r.returncode == 1, r
        body = server.pings[-1].body
        assert 50_000 < len(body) <= 100_000 and body.startswith(b"line ") and b"line 6000\nhbwrap: " in body
    finally:
        server.stop()


def test_a_failing_ping_is_said_on_stderr_even_with_quiet(hb):
    url = f"http://127.0.0.1:{free_port()}/ping/3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
    r = hb.run("run", "--name", "quietping", "--quiet", "--ping-url", url, "--", "true")
    assert r.returncode == 0, r
    lines = [line for line in r.err.splitlines() if line.startswith("hbwrap: ping ")]
    assert len(lines) == 1 and "connection refused" in lines[0] and "3f1c2d4e" not in r.err, r.err
    assert [e["channel"] for e in hb.events("quietping") if e["event"] == "alert_failed"] == ["ping", "ping"]
