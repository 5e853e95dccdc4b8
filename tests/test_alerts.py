"""hbwrap.alerts in-process: real loopback HTTP servers and real alert commands, no hbwrap binary needed.

Every wait is bounded (`wait_for`); servers record every request; a hung server is released at teardown.
The helpers are in alertkit.py, the fixtures `h` and `servers` in conftest.py.
"""
from __future__ import annotations

import base64
import json
import re
import os
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from alertkit import (DISCORD_TOKEN, HC_PING_KEY, HC_UUID, RUN_ID, SLACK_TOKEN, ev, free_port, json_body, local_ts,
                      wait_for)
from conftest import alive
from hbwrap.alerts.delivery import Alerter
from hbwrap.alerts.mask import mask_text, mask_url, mask_urls_in, url_problem
from hbwrap.alerts.messages import ping_endpoint, ping_rid, summarize, tail_text, utf8_tail

# --- masking -------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, masked", [
    (f"https://hooks.slack.com/services/T0123ABCD/B0456EFGH/{SLACK_TOKEN}",
     "https://hooks.slack.com/services/***/***/***"),
    (f"https://discord.com/api/webhooks/123456789012345678/{DISCORD_TOKEN}",
     "https://discord.com/api/webhooks/***/***"),
    (f"https://hc-ping.com/{HC_UUID}", "https://hc-ping.com/***"),
    (f"https://hc-ping.com/{HC_UUID}/start", "https://hc-ping.com/***/start"),
    (f"https://hc-ping.com/{HC_PING_KEY}/nightly-backup?create=1", "https://hc-ping.com/***/nightly-backup?create=***"),
    ("https://alice:s3cret-Pass@hc.example.com:8443/ping/x", "https://***@hc.example.com:8443/ping/x"),
    ("https://example.com/hooks/alert?token=abc&flag#frag", "https://example.com/hooks/alert?token=***&***#***"),
    ("https://example.com/hooks/alert", "https://example.com/hooks/alert"),
])
def test_mask_url_hides_credentials_and_tokens_keeps_scheme_and_host(url, masked):
    assert mask_url(url) == masked


def test_mask_url_never_raises():
    assert mask_url("http://[broken") == "***"
    assert mask_url("") == ""


def test_mask_text_hides_the_url_and_its_pieces_wherever_they_appear():
    url = f"https://bob:hunter2pw@hooks.slack.com/services/T0123ABCD/B0456EFGH/{SLACK_TOKEN}"
    text = (f"POST {url} failed; path /services/T0123ABCD/B0456EFGH/{SLACK_TOKEN} rejected, "
            f"token {SLACK_TOKEN}, password hunter2pw")
    out = mask_text(text, [url])
    assert "https://***@hooks.slack.com/services/***/***/***" in out
    for secret in (SLACK_TOKEN, "hunter2pw", "T0123ABCD", "B0456EFGH"):
        assert secret not in out
    assert mask_text("nothing secret here", [url]) == "nothing secret here"


def test_mask_urls_in_free_text():
    cmd = f"curl -fsS -d @- https://hooks.slack.com/services/T0123ABCD/B0456EFGH/{SLACK_TOKEN} && echo ok"
    assert mask_urls_in(cmd) == "curl -fsS -d @- https://hooks.slack.com/services/***/***/*** && echo ok"


def test_url_problem_accepts_only_http_urls_and_masks_its_message():
    assert url_problem("https://hc-ping.com/x") is None
    message = url_problem(f"ftp://hc-ping.com/{HC_UUID}")
    assert message and HC_UUID not in message and "http" in message


# --- pure helpers --------------------------------------------------------------------------------

def test_ping_rid_is_a_stable_uuid_and_endpoint_keeps_the_query():
    rid = ping_rid(RUN_ID)
    assert uuid.UUID(rid) and rid == ping_rid(RUN_ID) and rid != ping_rid(RUN_ID + "x")
    assert ping_rid(HC_UUID) == HC_UUID
    # healthchecks answers 400 "invalid uuid format" to anything but lowercase, hyphenated UUIDs
    # (hc/lib/string.py in healthchecks/healthchecks); checked against the real server too, see the README
    lower_uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    assert lower_uuid.fullmatch(rid) and lower_uuid.fullmatch(ping_rid(HC_UUID.upper().replace("-", "")))
    assert ping_endpoint(f"https://hc.example.com/ping/{HC_PING_KEY}/job/?create=1", "start", RUN_ID) == \
        f"https://hc.example.com/ping/{HC_PING_KEY}/job/start?create=1&rid={rid}"
    assert ping_endpoint(f"https://hc-ping.com/{HC_UUID}", "", RUN_ID) == f"https://hc-ping.com/{HC_UUID}?rid={rid}"


def test_tail_text_strips_terminal_noise_and_bounds_size():
    raw = b"\x1b[31mred\x1b[0m\nprogress 10%\rprogress 100%\n" + b"\xff\xfe bad utf8\n" + b"x" * 50 + b"\n"
    text = tail_text(raw, 1000, 10)
    assert "red\nprogress 100%\n" in text and "\x1b" not in text and "\ufffd" in text
    assert tail_text(b"".join(b"line %d\n" % i for i in range(100)), 1000, 3) == "line 97\nline 98\nline 99"
    assert len(tail_text(b"y" * 5000, 100, 10)) == 100


def test_summary_is_one_readable_line():
    text = summarize(ev("stall", ts=local_ts(2, 13), attempt=2, reason="response", checkpoint="page-42",
                        detail="no sign of life for 120s\n(--response-timeout 120s)"))
    assert text == ("reddit-3am stalled (response) at 02:13, attempt 2, checkpoint page-42: "
                    "no sign of life for 120s (--response-timeout 120s)")
    assert "\n" not in summarize(ev("checkpoint", checkpoint="a\nb"))


# --- webhook formats -----------------------------------------------------------------------------

def test_json_webhook_posts_the_event_plus_summary_and_output_tail(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[srv.url()], webhook_format="json")
    event = ev("stall", attempt=2, reason="response", checkpoint="page-42", detail="no sign of life for 120s")
    alerter.notify(event)
    (req,) = srv.got(1)
    assert req["path"] == "/hook"
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["User-Agent"].startswith("hbwrap/")
    body = json_body(req)
    for key, value in event.items():
        assert body[key] == value
    for part in ("reddit-3am", "stalled (response)", "attempt 2", "checkpoint page-42", "no sign of life"):
        assert part in body["summary"]
    assert body["output_tail"].endswith("last line of output")
    alerter.close(5)
    assert h.records == []


def test_slack_webhook_text_has_summary_and_escaped_output_in_a_code_block(h, servers):
    srv = servers()
    h.tail = b"working...\n<!channel> & <@U123> ``` sneaky\nboom: connection reset\n"
    alerter = h.make(webhooks=[srv.url()], webhook_format="slack")
    alerter.notify(ev("escalate", reason="restarts exhausted", exit_code=124, checkpoint="page-42", attempt=4))
    body = json_body(srv.got(1)[0])
    assert set(body) == {"text"}
    summary, _, block = body["text"].partition("\n```\n")
    assert "reddit-3am gave up (restarts exhausted), exit code 124" in summary and "attempt 4" in summary
    assert block.endswith("boom: connection reset\n```") and block.count("```") == 1
    assert "&lt;!channel&gt; &amp; &lt;@U123&gt;" in block and "<!channel>" not in body["text"]


def test_discord_webhook_fits_2000_chars_and_cannot_ping_anyone(h, servers):
    srv = servers()
    h.tail = b"".join(b"%04d " % i + b"z" * 95 + b"\n" for i in range(300)) + b"@everyone ``` done: exit 3\n"
    alerter = h.make(webhooks=[srv.url()], webhook_format="discord", alert_on=frozenset({"failure"}))
    alerter.notify(ev("failure", exit_code=3, attempt=1, checkpoint="row-17", detail="d" * 5000))
    body = json_body(srv.got(1)[0])
    content = body["content"]
    assert len(content) <= 2000
    assert content.startswith("reddit-3am failed with exit code 3")
    assert content.count("```") == 2 and content.endswith("done: exit 3\n```")
    assert body["allowed_mentions"] == {"parse": []}


def test_every_webhook_gets_the_alert(h, servers):
    a, b = servers(), servers()
    alerter = h.make(webhooks=[a.url("/a"), b.url("/b"), a.url("/a")])
    alerter.notify(ev("takeover", previous_supervisor_pid=123, supervisor_pid=456))
    assert a.got(1)[0]["path"] == "/a" and b.got(1)[0]["path"] == "/b"
    alerter.close(5)
    assert len(a.requests) == 1  # the same URL twice is one target


# --- which events alert --------------------------------------------------------------------------

def test_default_alert_on_is_stall_escalate_takeover_restart_pending_and_never_alert_failed(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[srv.url()])
    for name in ("run_start", "attempt_start", "checkpoint", "kill", "exit", "restart", "success", "failure",
                 "stop", "alert_failed", "approved", "denied", "lease_lost"):
        alerter.notify(ev(name))
    for name in ("stall", "escalate", "takeover", "restart_pending"):
        alerter.notify(ev(name, reason="x"))
    alerter.close(5)
    assert [json_body(r)["event"] for r in srv.requests] == ["stall", "escalate", "takeover", "restart_pending"]


def test_alert_on_list_selects_events(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[srv.url()], alert_on=frozenset({"checkpoint", "alert_failed"}))
    for name in ("stall", "checkpoint", "alert_failed", "escalate"):
        alerter.notify(ev(name, checkpoint="c1"))
    alerter.close(5)
    assert [json_body(r)["event"] for r in srv.requests] == ["checkpoint"]


def recovered_run(alerter: Alerter) -> None:
    alerter.notify(ev("run_start", ts=local_ts(2, 10)))
    alerter.notify(ev("attempt_start", ts=local_ts(2, 10), attempt=1))
    alerter.notify(ev("checkpoint", ts=local_ts(2, 11), checkpoint="page-42"))
    alerter.notify(ev("stall", ts=local_ts(2, 13), reason="response", checkpoint="page-42"))
    alerter.notify(ev("restart", ts=local_ts(2, 13), delay_s=1.0))
    alerter.notify(ev("attempt_start", ts=local_ts(2, 15), attempt=2, resume_from="page-42"))
    alerter.notify(ev("success", ts=local_ts(2, 40), attempt=2, exit_code=0, checkpoint="page-99"))


def test_success_after_a_stall_is_alerted_as_recovered(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[srv.url()])
    recovered_run(alerter)
    alerter.close(5)
    stall, success = [json_body(r) for r in srv.requests]
    assert stall["event"] == "stall" and success["event"] == "success"
    assert success["recovered"] is True and success["stalls"] == 1 and success["resumed_from"] == "page-42"
    assert ("stalled at 02:13 (response), recovered at 02:15 from checkpoint page-42"
            in success["summary"]), success["summary"]
    assert success["summary"].startswith("reddit-3am succeeded at 02:40, attempt 2")


def test_recovery_is_known_after_a_takeover_through_replay(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[srv.url()], alert_on=frozenset({"stall"}))
    alerter.replay([ev("run_start", ts=local_ts(2, 10)), ev("stall", ts=local_ts(2, 13), reason="progress"),
                    ev("attempt_start", ts=local_ts(2, 14), attempt=2, resume_from="p7"),
                    ev("stall", ts=local_ts(2, 20), attempt=2, reason="timeout")])
    alerter.notify(ev("takeover", attempt=2, previous_supervisor_pid=99))
    alerter.notify(ev("attempt_start", ts=local_ts(2, 31), attempt=3, resume_from="p9"))
    alerter.notify(ev("success", ts=local_ts(2, 50), attempt=3, exit_code=0))
    alerter.close(5)
    (success,) = [json_body(r) for r in srv.requests]
    assert "stalled 2 times (first at 02:13, progress), recovered at 02:31 from checkpoint p9" in success["summary"]


def test_recovered_success_is_not_alerted_when_stall_is_not_in_alert_on(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[srv.url()], alert_on=frozenset({"escalate"}))
    recovered_run(alerter)
    alerter.notify(ev("escalate", run_id="next-run"))
    alerter.close(5)
    assert [json_body(r)["event"] for r in srv.requests] == ["escalate"]


def test_a_new_run_forgets_the_previous_runs_stalls(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[srv.url()], alert_on=frozenset({"stall"}))
    alerter.notify(ev("stall", reason="progress"))
    alerter.notify(ev("run_start", run_id="run-2"))
    alerter.notify(ev("success", run_id="run-2", exit_code=0))
    alerter.close(5)
    assert [json_body(r)["event"] for r in srv.requests] == ["stall"]


# --- pings ---------------------------------------------------------------------------------------

def test_ping_sequence_of_a_successful_run(h, servers):
    srv = servers()
    h.tail = os.urandom(4096) + b"\xff\xfe not utf-8 " + b"o" * 20000 + b"\nthe end\n"
    alerter = h.make(ping_url=srv.url(f"/ping/{HC_UUID}"))
    for name in ("run_start", "attempt_start", "checkpoint", "exit", "success"):
        alerter.notify(ev(name, exit_code=0 if name in ("exit", "success") else None))
    start, success = srv.got(2)
    alerter.close(5)
    assert len(srv.requests) == 2 and h.records == []
    rid = ping_rid(RUN_ID)
    assert urlsplit(start["path"]).path == f"/ping/{HC_UUID}/start"
    assert urlsplit(success["path"]).path == f"/ping/{HC_UUID}/0"  # the server records exit status 0
    for req in (start, success):
        assert parse_qs(urlsplit(req["path"]).query) == {"rid": [rid]}
    assert start["body"] == b""  # the log at run start still holds the previous run's output
    # within 10 KB (healthchecks' PING_BODY_LIMIT): the newest output, as valid UTF-8, then what happened
    line = b"hbwrap: exit code 0 after 1 attempt: succeeded\n"
    assert len(success["body"]) <= 10000 and success["body"].endswith(b"o" * 100 + b"\nthe end\n" + line)
    assert success["body"] == utf8_tail(h.tail, 10000 - len(line)) + line


def test_ping_body_shrinks_to_the_servers_ping_body_limit_keeping_the_newest_output(h, servers):
    # healthchecks keeps the first PING_BODY_LIMIT bytes and says how many in every reply: send the last ones
    srv = servers(headers={"Ping-Body-Limit": "100"})
    h.tail = b"".join(b"line %04d of the output\n" % i for i in range(1000)) + b"the error at the end\n"
    alerter = h.make(ping_url=srv.url(f"/ping/{HC_UUID}"))
    alerter.notify(ev("run_start"))
    srv.got(1)
    alerter.notify(ev("failure", exit_code=3, reason="exit code 3"))
    start, fail = srv.got(2)
    alerter.close(5)
    assert h.records == []
    assert len(fail["body"]) <= 100 and fail["body"].endswith(b"the error at the end\nhbwrap: exit code 3 after 1 "
                                                             b"attempt: failed\n"), fail["body"]


@pytest.mark.parametrize("header", ["nonsense", "0", "-5", ""])
def test_a_ping_body_limit_that_makes_no_sense_is_ignored(h, servers, header):
    srv = servers(headers={"Ping-Body-Limit": header})
    h.tail = b"".join(b"line %04d of the output\n" % i for i in range(1000))
    alerter = h.make(ping_url=srv.url(f"/ping/{HC_UUID}"))
    alerter.notify(ev("run_start"))
    srv.got(1)
    alerter.notify(ev("success", exit_code=0))
    start, success = srv.got(2)
    alerter.close(5)
    assert h.records == [] and 9000 < len(success["body"]) <= 10000
    assert success["body"].endswith(b"line 0999 of the output\nhbwrap: exit code 0 after 1 attempt: succeeded\n")


def test_ping_sequence_of_failing_runs(h, servers):
    srv = servers()
    alerter = h.make(ping_url=srv.url(f"/ping/{HC_PING_KEY}/nightly"))
    alerter.notify(ev("run_start"))
    alerter.notify(ev("stall", reason="response"))
    alerter.notify(ev("restart", delay_s=1))
    alerter.notify(ev("failure", exit_code=3, reason="exit code 3"))
    alerter.notify(ev("run_start", run_id="run-2"))
    alerter.notify(ev("escalate", run_id="run-2", reason="restarts exhausted", exit_code=124))
    reqs = srv.got(5)
    alerter.close(5)
    paths = [urlsplit(r["path"]).path.rsplit("/", 1)[-1] for r in reqs]
    assert paths == ["start", "log", "3", "start", "124"]
    rids = [parse_qs(urlsplit(r["path"]).query)["rid"][0] for r in reqs]
    assert rids == [ping_rid(RUN_ID)] * 3 + [ping_rid("run-2")] * 2
    assert reqs[1]["body"] == h.tail + b"hbwrap: attempt 1 stalled (response)\n"
    assert reqs[2]["body"] == h.tail + b"hbwrap: exit code 3 after 1 attempt: failed\n"


def test_a_hung_webhook_does_not_delay_the_ping(h, servers):
    hung, hc = servers(replies=["sleep"]), servers()
    alerter = h.make(webhooks=[hung.url()], ping_url=hc.url("/ping/x"))
    alerter.notify(ev("stall", reason="response"))
    hung.got(1)
    assert urlsplit(hc.got(1, timeout=2)[0]["path"]).path == "/ping/x/log"


# --- HTTP failures -------------------------------------------------------------------------------

def test_5xx_is_retried_with_backoff_then_succeeds(h, servers):
    srv = servers(replies=[500, 503])
    alerter = h.make(webhooks=[srv.url()], backoff_s=0.1)
    alerter.notify(ev("stall"))
    reqs = srv.got(3)
    alerter.close(5)
    assert len(srv.requests) == 3 and h.records == []
    assert reqs[1]["at"] - reqs[0]["at"] >= 0.09 and reqs[2]["at"] - reqs[1]["at"] >= 0.19  # 0.1 s, 0.2 s
    assert h.delivered[-1]["tries"] == 3


def test_5xx_retries_are_bounded_then_recorded(h, servers):
    srv = servers(default=500)
    alerter = h.make(webhooks=[srv.url()], retries=2)
    alerter.notify(ev("escalate"))
    (rec,) = h.wait_records(1)
    alerter.close(5)
    assert len(srv.requests) == 3
    assert rec["channel"] == "webhook" and rec["http_status"] == 500 and rec["tries"] == 3
    assert rec["reason"].startswith("HTTP 500") and rec["alert_event"] == "escalate"
    assert rec["target"] == srv.url()


def test_4xx_is_not_retried(h, servers):
    srv = servers(default=404)
    alerter = h.make(webhooks=[srv.url()])
    alerter.notify(ev("stall"))
    (rec,) = h.wait_records(1)
    alerter.close(5)
    assert len(srv.requests) == 1 and rec["http_status"] == 404 and rec["tries"] == 1


def test_429_is_retried(h, servers):
    srv = servers(replies=[429])
    alerter = h.make(webhooks=[srv.url()])
    alerter.notify(ev("stall"))
    srv.got(2)
    alerter.close(5)
    assert h.records == []


def test_refused_connection_is_retried_then_recorded(h):
    url = f"http://127.0.0.1:{free_port()}/ping/{HC_UUID}"
    alerter = h.make(ping_url=url)
    alerter.notify(ev("run_start"))
    (rec,) = h.wait_records(1)
    assert rec["channel"] == "ping" and rec["tries"] == 3 and "connection refused" in rec["reason"]
    assert rec["target"].startswith("http://127.0.0.1:") and rec["target"].endswith("/ping/***/start?rid=***")
    assert HC_UUID not in json.dumps(rec)


def test_http_timeout_is_recorded(h, servers):
    srv = servers(replies=["sleep"])
    alerter = h.make(webhooks=[srv.url()], timeout_s=0.3, retries=0)
    alerter.notify(ev("stall"))
    (rec,) = h.wait_records(1)
    assert rec["reason"] == "timed out after 0.3s" and rec["tries"] == 1


def test_server_that_never_answers_neither_blocks_notify_nor_delays_exit(h, servers):
    srv = servers(default="sleep")
    alerter = h.make(webhooks=[srv.url()], ping_url=srv.url("/ping/k"))  # timeout_s stays 5 s
    started = time.monotonic()
    alerter.notify(ev("run_start"))
    alerter.notify(ev("stall", reason="response"))
    assert time.monotonic() - started < 1.0  # a blocking send would take 5 s
    srv.got(2)
    started = time.monotonic()
    alerter.close(wait_s=1)
    assert 0.9 <= time.monotonic() - started < 4.0  # not the 5 s a try may take
    assert sorted((r["channel"], r["alert_event"]) for r in h.records) == [
        ("ping", "run_start"), ("ping", "stall"), ("webhook", "stall")]  # in flight or queued
    assert all(r["reason"].startswith("timeout at exit") for r in h.records)


def test_close_waits_for_deliveries_in_flight(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[srv.url()], ping_url=srv.url("/ping/x"))
    for name in ("run_start", "stall", "escalate"):
        alerter.notify(ev(name))
    alerter.close(wait_s=5)
    assert len(srv.requests) == 5 and h.records == []
    alerter.notify(ev("stall"))  # after close: ignored
    alerter.close()
    assert len(srv.requests) == 5


def test_basic_auth_from_user_info(h, servers):
    srv = servers()
    alerter = h.make(webhooks=[f"http://alice:p%40ss@127.0.0.1:{srv.port}/hook"])
    alerter.notify(ev("stall"))
    auth = srv.got(1)[0]["headers"]["Authorization"]
    assert base64.b64decode(auth.split()[1]) == b"alice:p@ss"


def test_post_follows_307_and_308_keeping_method_and_body(h, servers):
    final = servers()
    hop2 = servers(default=308, location=final.url("/final"))
    hop1 = servers(default=307, location=hop2.url("/moved"))
    alerter = h.make(webhooks=[hop1.url()])
    alerter.notify(ev("stall", checkpoint="page-42"))
    (req,) = final.got(1)
    assert req["path"] == "/final" and json_body(req)["checkpoint"] == "page-42"
    alerter.close(5)
    assert h.records == []


def test_no_alert_failed_record_contains_a_secret_url(h, servers, tmp_path):
    leaky = servers(default=404, echo_path=True)   # answers with the secret path in its body
    broken = servers(default=500, echo_path=True)
    slack = f"http://bob:hunter2pw@127.0.0.1:{leaky.port}/services/T0123ABCD/B0456EFGH/{SLACK_TOKEN}"
    refused = f"http://127.0.0.1:{free_port()}/api/webhooks/123456789012345678/{DISCORD_TOKEN}"
    ping = f"http://127.0.0.1:{broken.port}/ping/{HC_PING_KEY}/nightly"
    cmd = f"echo posting to {slack} failed >&2; exit 1"
    alerter = h.make(webhooks=[slack, refused], ping_url=ping, alert_cmd=cmd)
    alerter.notify(ev("stall", reason="response"))
    h.wait_records(4)
    alerter.close(5)
    dumped = json.dumps(h.records)
    for secret in (SLACK_TOKEN, "hunter2pw", DISCORD_TOKEN, "123456789012345678", HC_PING_KEY, slack, refused, ping):
        assert secret not in dumped
    channels = sorted(r["channel"] for r in h.records)
    assert channels == ["alert-cmd", "ping", "webhook", "webhook"]
    assert "https" not in dumped and "/services/***/***/***" in dumped


# --- the alert command ---------------------------------------------------------------------------

def read_env0(path) -> dict[str, str]:
    data = wait_for(lambda: path.exists() and path.read_bytes(), what=f"{path}")
    return dict(item.split("=", 1) for item in data.decode().split("\0") if item)


def test_alert_command_gets_the_event_in_its_environment(h, tmp_path):
    env = {"PATH": os.environ["PATH"], "OUT": str(tmp_path), "HBWRAP_EXIT_CODE": "99", "HBWRAP_REASON": "stale"}
    alerter = h.make(alert_cmd='env -0 > "$OUT/$HBWRAP_EVENT.env"', env=env,
                     alert_on=frozenset({"stall", "failure"}))
    alerter.notify(ev("stall", attempt=2, reason="progress", checkpoint="page-42"))
    alerter.notify(ev("failure", attempt=3, exit_code=7, checkpoint=None))
    alerter.close(5)
    stall, failure = read_env0(tmp_path / "stall.env"), read_env0(tmp_path / "failure.env")
    assert {k: v for k, v in stall.items() if k.startswith("HBWRAP_") and k not in ("HBWRAP_EVENT_JSON",
                                                                                      "HBWRAP_SUMMARY")} == {
        "HBWRAP_EVENT": "stall", "HBWRAP_JOB": "reddit-3am", "HBWRAP_RUN_ID": RUN_ID, "HBWRAP_ATTEMPT": "2",
        "HBWRAP_REASON": "progress", "HBWRAP_CHECKPOINT": "page-42"}  # no inherited HBWRAP_EXIT_CODE
    event = json.loads(stall["HBWRAP_EVENT_JSON"])
    assert event["event"] == "stall" and event["checkpoint"] == "page-42"
    assert event["summary"] == stall["HBWRAP_SUMMARY"]
    assert failure["HBWRAP_EXIT_CODE"] == "7" and failure["HBWRAP_CHECKPOINT"] == "" and failure["HBWRAP_REASON"] == ""
    assert stall["OUT"] == str(tmp_path)
    assert h.records == []


def test_shell_injection_in_event_fields_and_output_is_never_executed(h, tmp_path, servers):
    srv = servers()
    marks = [tmp_path / f"pwned{i}" for i in range(5)]
    h.tail = f"$(touch {marks[0]})\n`touch {marks[1]}`\n".encode()
    checkpoint = f"$(touch {marks[2]})"
    reason = f"`touch {marks[3]}`; touch {marks[4]}"
    out = tmp_path / "out.txt"
    alerter = h.make(alert_cmd=f'printf "%s|%s|%s\\n" "$HBWRAP_CHECKPOINT" "$HBWRAP_REASON" "$HBWRAP_SUMMARY" > {out}',
                     webhooks=[srv.url()], webhook_format="slack")
    alerter.notify(ev("stall", checkpoint=checkpoint, reason=reason, detail=f"'; touch {marks[4]}; '"))
    alerter.close(5)
    text = wait_for(lambda: out.exists() and out.read_text(), what="alert command output")
    assert text.startswith(f"{checkpoint}|{reason}|")
    assert not [m for m in marks if m.exists()]
    assert checkpoint in json_body(srv.got(1)[0])["text"]
    assert h.records == []


def test_hanging_alert_command_is_killed_with_its_group_and_recorded(h, tmp_path):
    pidfile = tmp_path / "bg.pid"
    alerter = h.make(alert_cmd=f"echo started; sleep 60 & echo $! > {pidfile}; wait", cmd_timeout_s=0.5)
    started = time.monotonic()
    alerter.notify(ev("escalate"))
    assert time.monotonic() - started < 1.0  # a blocking send would take 5 s
    (rec,) = h.wait_records(1)
    assert time.monotonic() - started < 10.0  # not the 60 s the command would run
    assert rec["channel"] == "alert-cmd" and rec["reason"] == "alert command timed out after 0.5s and was killed"
    assert rec["output"] == "started"
    bg = int(pidfile.read_text())

    wait_for(lambda: not alive(bg), 3.0, f"background sleep {bg} of the alert command to die")
    assert alerter.own_pids == set()


def test_failing_alert_command_is_recorded_with_its_output(h):
    alerter = h.make(alert_cmd="echo out; echo err >&2; exit 3")
    alerter.notify(ev("takeover"))
    (rec,) = h.wait_records(1)
    assert rec["reason"] == "alert command exited with code 3" and rec["cmd_exit_code"] == 3
    assert rec["output"] == "out\nerr" and rec["target"] == "echo out; echo err >&2; exit 3"


def test_alert_command_output_is_bounded(h):
    alerter = h.make(alert_cmd="head -c 100000 /dev/zero | tr '\\0' a; echo; echo tail-marker; exit 1")
    alerter.notify(ev("stall"))
    (rec,) = h.wait_records(1)
    assert len(rec["output"]) <= 4096 and rec["output"].endswith("tail-marker")


def test_hanging_alert_command_is_killed_at_close(h, tmp_path):
    alerter = h.make(alert_cmd=f"echo $$ > {tmp_path}/sh.pid; exec sleep 60", cmd_timeout_s=30)
    alerter.notify(ev("stall"))
    pid = int(wait_for(lambda: (tmp_path / "sh.pid").exists() and (tmp_path / "sh.pid").read_text().strip(),
                       what="alert command pid"))
    wait_for(lambda: alerter.own_pids == {pid}, what="alert command tracked")
    started = time.monotonic()
    alerter.close(wait_s=0.3)
    assert time.monotonic() - started < 5.0  # not the 30 s of the command's timeout
    assert [r["reason"].split(" (")[0] for r in h.records] == ["timeout at exit"]
    wait_for(lambda: not alive(pid), 3.0, "alert command killed")


# --- robustness ----------------------------------------------------------------------------------

def test_broken_callbacks_never_reach_the_caller(servers):
    srv = servers(default=500)

    def bad_record(fields):
        raise OSError("disk full")

    def bad_tail(n):
        raise OSError("log gone")

    alerter = Alerter(job="j", alert_cmd=None, webhooks=[srv.url()], webhook_format="json", alert_on=None,
                      ping_url=srv.url("/p"), record=bad_record, output_tail=bad_tail, retries=0)
    alerter.notify(ev("stall"))
    alerter.notify({"event": "stall"})  # a minimal event
    alerter.notify({})
    srv.got(4)
    alerter.close(5)
    assert {urlsplit(r["path"]).path for r in srv.requests} == {"/hook", "/p/log"}


def test_nothing_configured_means_no_threads(h):
    before = threading.active_count()
    alerter = h.make()
    for name in ("run_start", "stall", "escalate", "success"):
        alerter.notify(ev(name))
    assert threading.active_count() == before
    alerter.close()


def test_bad_webhook_format_is_rejected(h):
    with pytest.raises(ValueError):
        h.make(webhook_format="teams")
