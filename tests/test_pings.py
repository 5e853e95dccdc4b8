"""healthchecks pings in-process, against a stand-in that keeps, decodes and records pings as the real server does.

What the server stores is what counts: the kind of each ping, its exit status, the body it kept, the flips.
"""
from __future__ import annotations

import pytest

from alertkit import RUN_ID, ev, free_port
from hbwrap.alerts.messages import ping_body, utf8_tail

def last_line(body: bytes) -> str:
    lines = body.decode().split("\n")
    assert lines[-1] == "", f"the body ends with a newline: {body[-200:]!r}"
    return lines[-2]


# --- the body ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, limit, expected", [
    (b"short\n", 100, b"short\n"),
    (b"aaaa\nbbbb\ncccc\n", 12, b"bbbb\ncccc\n"),                  # cut inside 'aaaa': start at the next line
    (b"x" * 5000 + b"\nend\n", 3000, b"x" * 2995 + b"\nend\n"),    # no line start in the first 1,000 bytes
    (b"y" * 3000 + b"\n" + b"z" * 500, 2000, b"y" * 1499 + b"\n" + b"z" * 500),
    ("é".encode() * 100, 11, "é".encode() * 5),                    # never inside a character
    ("€".encode() * 100 + b"\n", 9, "€".encode() * 2 + b"\n"),
    (b"\xff" * 50, 10, "\ufffd".encode() * 3),                     # invalid UTF-8 replaced, still within the limit
    (b"ok \xc3\n", 100, "ok \ufffd\n".encode()),                   # a character cut at the end of the log
])
def test_utf8_tail_is_valid_utf8_and_starts_at_a_line_or_a_character(raw, limit, expected):
    assert utf8_tail(raw, limit) == expected


def test_ping_body_is_the_newest_output_then_one_hbwrap_line_within_the_limit():
    line = "exit code 3 after 1 attempt: failed"
    body = ping_body(b"".join(b"line %05d\n" % i for i in range(5000)), line, 10_000)
    assert len(body) <= 10_000 and body.startswith(b"line ") and b"line 04999\nhbwrap: " + line.encode() in body
    assert last_line(body) == "hbwrap: " + line and body.count(b"hbwrap: ") == 1
    unterminated = ping_body("é".encode() * 30000 + b"FINAL", line, 10_000)
    assert len(unterminated) <= 10_000 and unterminated.decode().endswith("éFINAL\nhbwrap: " + line + "\n")
    assert ping_body(b"", line, 10_000) == f"hbwrap: {line}\n".encode()
    assert len(ping_body(b"x" * 500, "y" * 5000, 1000)) <= 1000  # an absurd line is cut, not the limit broken


# --- what the server records ---------------------------------------------------------------------------

def test_a_body_without_newlines_reaches_a_keyword_filtering_check(h, hc):
    """Issue 11.1: cut inside a UTF-8 character, the body made the server's `body.decode()` fail (HTTP 500)."""
    server = hc(filter_body=True, success_kw="FINAL")
    h.tail = "é".encode() * 30000 + b"FINAL"
    alerter = h.make(ping_url=server.url)
    alerter.notify(ev("run_start"))
    alerter.notify(ev("success", exit_code=0))
    pings = server.wait_pings(2)
    alerter.close(5)
    assert server.errors == [] and h.records == []
    assert pings[-1].kind == "success" and server.check.status == "up"
    assert pings[-1].body.decode().startswith("é")


def run_events(run_id: str, *events) -> list[dict]:
    return [ev("run_start", run_id=run_id), *(ev(name, run_id=run_id, **fields) for name, fields in events)]


def test_end_of_run_pings_carry_the_exit_code(h, hc):
    """Issue 11.2/11.3: `/<exit code>` at the end (the server stores it), `/log` within the run."""
    server = hc()
    h.tail = b"working\nboom\n"
    alerter = h.make(ping_url=server.url)
    runs = [
        run_events("run-ok", ("success", {"exit_code": 0})),
        run_events("run-3", ("exit", {"exit_code": 3}), ("failure", {"exit_code": 3, "reason": "exit"})),
        run_events("run-124", ("stall", {"reason": "response"}), ("takeover", {"attempt": 2}),
                   ("escalate", {"exit_code": 124, "reason": "restarts exhausted", "attempt": 3,
                                 "stall": "response", "restarts": 2})),
        run_events("run-stop", ("stop", {"exit_code": 143, "signal": "SIGTERM"})),
        run_events("run-lost", ("escalate", {"reason": "keeper lost"})),
    ]
    for run in runs:
        for event in run:
            alerter.notify(event)
    pings = server.wait_pings(12)
    alerter.close(5)
    assert h.records == [] and server.errors == []
    got = [(p.path.rsplit("/", 1)[-1], p.kind, p.exitstatus) for p in pings]
    code = server.check.code
    assert got == [("start", "start", None), ("0", "success", 0),
                   ("start", "start", None), ("3", "fail", 3),
                   ("start", "start", None), ("log", "log", None), ("log", "log", None), ("124", "fail", 124),
                   ("start", "start", None), ("143", "fail", 143),
                   ("start", "start", None), ("fail", "fail", None)], (code, got)
    assert server.check.flips == ["up", "down"]
    assert len(server.check.durations) == 5  # every end matched its run's /start
    ends = [p for p in pings if p.kind in ("success", "fail")]
    assert [last_line(p.body) for p in ends] == [
        "hbwrap: exit code 0 after 1 attempt: succeeded",
        "hbwrap: exit code 3 after 1 attempt: failed",
        "hbwrap: exit code 124 after 3 attempts: gave up (restarts exhausted), last stall: response",
        "hbwrap: exit code 143 after 1 attempt: stopped (SIGTERM)",
        "hbwrap: no exit code after 1 attempt: gave up (keeper lost)"]
    assert all(p.body.startswith(b"working\nboom\nhbwrap: ") for p in ends)
    stall_log = pings[5]
    assert last_line(stall_log.body) == "hbwrap: attempt 1 stalled (response)"


def test_command_not_found_ping_still_says_what_happened(h, hc):
    server = hc()
    h.tail = b""
    alerter = h.make(ping_url=server.url)
    alerter.notify(ev("run_start"))
    alerter.notify(ev("exit", exit_code=127, reason="not found", detail="No such file or directory: 'nosuch'"))
    alerter.notify(ev("escalate", exit_code=127, reason="command not found"))
    pings = server.wait_pings(2)
    alerter.close(5)
    assert pings[-1].exitstatus == 127 and pings[-1].body == (
        b"hbwrap: exit code 127 after 1 attempt: gave up (command not found): No such file or directory: 'nosuch'\n")


def test_success_after_stalls_says_it_recovered(h, hc):
    server = hc()
    alerter = h.make(ping_url=server.url)
    for event in run_events(RUN_ID, ("stall", {"reason": "progress"}), ("attempt_start", {"attempt": 2}),
                            ("success", {"exit_code": 0, "attempt": 2})):
        alerter.notify(event)
    pings = server.wait_pings(3)
    alerter.close(5)
    assert last_line(pings[-1].body) == "hbwrap: exit code 0 after 2 attempts: succeeded after 1 stall (progress)"


def test_a_larger_ping_body_limit_is_used_up_to_100kb(h, hc):
    """Issue 11.4: the server's Ping-Body-Limit raises the 10,000-byte default too (capped at 100,000)."""
    h.tail = b"".join(b"line %06d of the output\n" % i for i in range(20000))  # 460 KB
    sizes = {}
    for limit in (100_000, 500_000):
        server = hc(ping_body_limit=limit)
        alerter = h.make(ping_url=server.url)
        alerter.notify(ev("takeover"))  # the first ping of this supervisor: no reply seen yet
        alerter.notify(ev("stall", reason="response"))
        alerter.notify(ev("failure", exit_code=3, reason="exit"))
        pings = server.wait_pings(3)
        alerter.close(5)
        assert h.records == [] and server.errors == []
        sizes[limit] = [p.sent_bytes for p in pings]
        assert all(p.body.endswith(b"\n") and b"line 019999 of the output\nhbwrap: " in p.body for p in pings)
    for first, stall, end in sizes.values():
        assert 9_000 < first <= 10_000
        assert 99_000 < stall <= 100_000 and 99_000 < end <= 100_000


# --- failures said on stderr ---------------------------------------------------------------------------

def test_each_failing_target_is_said_once_through_warn(h, servers, tmp_path):
    """Issue 11.5: a cron user must learn their monitoring is broken; every failure is still in the events."""
    hook = servers(default=404)
    ping = f"http://127.0.0.1:{free_port()}/ping/3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
    warnings: list[str] = []
    alerter = h.make(webhooks=[hook.url("/hooks/Secr3tT0kenValue99")], ping_url=ping, alert_cmd="exit 3",
                     warn=warnings.append)
    alerter.notify(ev("run_start"))
    alerter.notify(ev("stall", reason="response"))
    alerter.notify(ev("escalate", exit_code=124, reason="stall"))
    h.wait_records(7)  # ping: start, log, 124; webhook and command: stall, escalate
    alerter.close(5)
    assert len(h.records) == 7
    assert len(warnings) == 3, warnings
    by_kind = {w.split(" ", 1)[0]: w for w in warnings}
    assert set(by_kind) == {"ping", "webhook", "alert"}, warnings
    assert "/ping/***/start" in by_kind["ping"] and "connection refused" in by_kind["ping"]
    assert "/hooks/***" in by_kind["webhook"] and "HTTP 404" in by_kind["webhook"]
    assert "exited with code 3" in by_kind["alert"]
    assert all("\n" not in w and not w.startswith("hbwrap:") for w in warnings)
    assert "Secr3tT0kenValue99" not in "".join(warnings) and "3f1c2d4e" not in "".join(warnings)


def test_deliveries_abandoned_at_exit_are_said_too(h, servers):
    hung = servers(default="sleep")
    warnings: list[str] = []
    alerter = h.make(webhooks=[hung.url()], warn=warnings.append)
    alerter.notify(ev("stall"))
    hung.got(1)
    alerter.close(wait_s=0.2)
    assert [r["reason"] for r in h.records] == ["timeout at exit (still in flight after 0.2s)"]
    assert len(warnings) == 1 and "timeout at exit" in warnings[0] and hung.url() in warnings[0]
