"""Operator experience: the live status line under a real pty, the status table, follow modes, PID 1 duty."""
import json
import os
import re
import shutil
import subprocess

import pexpect
import pytest

from conftest import wait_until
from hbwrap import views

ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


def spawn_on_pty(hb, *args, timeout=30):
    """Run hbwrap with stdout and stderr on one pseudo-terminal, as a person at a terminal would."""
    child = pexpect.spawn(hb.bin, [str(a) for a in args], env=hb.env, timeout=timeout)
    child.expect(pexpect.EOF)
    child.close()
    return child.before, child.exitstatus


def test_live_status_line_on_a_terminal_never_splits_the_commands_lines(hb):
    script = "for i in 1 2 3; do echo line-$i; sleep 1.2; done; printf 'part-'; sleep 1.3; echo 'whole'"
    out, code = spawn_on_pty(hb, "run", "--name", "live", "--response-timeout", "5s", "--", "sh", "-c", script)
    assert code == 0, out
    assert b"\xe2\xa0" in out and b"live \xc2\xb7 attempt 1/4" in out, out  # spinner and status text
    # erase-then-write: the command's lines arrive whole, the partial line is not broken by a redraw
    # what the terminal shows: each \r + erase-line starts the line afresh, so a line reads as its last part
    text = ANSI.sub(b"", out).replace(b"\r\n", b"\n")
    shown = [segment.split(b"\r")[-1] for segment in text.split(b"\n")]
    command_lines = [line for line in shown if line.startswith((b"line-", b"part-"))]
    assert command_lines == [b"line-1", b"line-2", b"line-3", b"part-whole"], out


def test_no_status_line_when_stderr_is_not_a_terminal(hb):
    r = hb.run("run", "--name", "plain", "--response-timeout", "5s", "--", "sh", "-c", "echo a; sleep 1.3; echo b")
    assert r.returncode == 0, r
    assert r.stdout == b"a\nb\n"
    assert r.stderr == b"", r


def test_status_table_layout_at_a_fixed_width():
    from rich.console import Console

    now = 1_800_000_000.0
    from hbwrap.jobstore import iso
    rows = [
        {"name": "nightly", "status": "succeeded", "attempt": 1, "restarts": 0, "child_pid": None,
         "started_at": iso(now - 900), "last_output_at": iso(now - 600), "last_progress_at": None,
         "checkpoint": None, "next_deadline_at": None, "next_deadline": None},
        {"name": "scraper", "status": "running", "attempt": 2, "restarts": 1, "child_pid": 4242,
         "started_at": iso(now - 125), "last_output_at": iso(now - 3), "last_progress_at": iso(now - 40),
         "checkpoint": "page-42", "next_deadline_at": iso(now + 20), "next_deadline": "response"},
        {"name": "poster", "status": "escalated", "attempt": 4, "restarts": 3, "child_pid": None,
         "started_at": iso(now - 4000), "last_output_at": iso(now - 3700), "last_progress_at": None,
         "checkpoint": None, "next_deadline_at": None, "next_deadline": None},
    ]
    console = Console(width=110, record=True, force_terminal=False, color_system=None)
    console.print(views.status_table(rows, now=now))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines == [
        "JOB      STATUS     ATTEMPT         PID   UPTIME  LAST OUTPUT  LAST PROGRESS  CHECKPOINT  NEXT DEADLINE",
        "scraper  running    2 (1 restart)   4242  2m05s   3s ago       40s ago        page-42     response in 20s",
        "poster   escalated  4 (3 restarts)  -     -       1h01m ago    -              -           -",
        "nightly  succeeded  1               -     -       10m00s ago   -              -           -",
    ], "\n".join(lines)
    plain = views.status_text(rows, now=now).splitlines()
    assert plain[0].split() == ["JOB", "STATUS", "ATTEMPT", "PID", "UPTIME", "LAST", "OUTPUT", "LAST", "PROGRESS",
                                "CHECKPOINT", "NEXT", "DEADLINE"]
    assert [line.split()[0] for line in plain[1:]] == ["scraper", "poster", "nightly"]


def test_status_watch_needs_a_terminal(hb):
    r = hb.run("status", "--watch")
    assert r.returncode == 2 and "terminal" in r.err, r


def test_events_and_logs_follow_until_the_run_ends(hb):
    first = hb.start("run", "--name", "f", "--", *hb.agent("numbered:6:0.2", "exit:0"))
    hb.wait_event("f", "attempt_start")
    logs = hb.start("logs", "f", "--follow")
    events = hb.start("events", "f", "--follow", "--json")
    assert hb.finish(first).returncode == 0
    log_out = hb.finish(logs, timeout=15)
    ev_out = hb.finish(events, timeout=15)
    assert log_out.returncode == 0 and ev_out.returncode == 0
    for i in range(1, 7):
        assert f"line {i}\n" in log_out.out, log_out
    assert [json.loads(x)["event"] for x in ev_out.out.splitlines()][-1] == "success", ev_out


def test_metrics_command_parses_with_prometheus_client(hb):
    prom = pytest.importorskip("prometheus_client.parser")
    assert hb.run("run", "--name", "m", "--", "true").returncode == 0
    out = hb.run("metrics")
    assert out.returncode == 0, out
    families = {f.name: f for f in prom.text_string_to_metric_families(out.out)}
    status = [s for s in families["hbwrap_status"].samples if s.labels["status"] == "succeeded"]
    assert status and status[0].labels["job_name"] == "m" and status[0].value == 1
    target = hb.path("hbwrap.prom")
    assert hb.run("metrics", "--output", target).returncode == 0
    assert open(target).read() == out.out


def test_config_show_round_trips_and_masks_secrets(hb):
    import tomllib

    cfg = hb.tmp / "config.toml"
    cfg.write_text('[jobs.x]\ncommand = ["true"]\nalert-webhook = ["https://hooks.slack.com/services/T0/B0/sekrit123456"]\n')
    r = hb.run("config", "show", "--config", str(cfg), "--name", "x", "--origin")
    assert r.returncode == 0, r
    data = tomllib.loads(r.out)
    assert data["jobs"]["x"]["command"] == ["true"]
    assert "sekrit123456" not in r.out
    bad = hb.run("run", "--config", str(cfg), "--name", "x", "--respnse-timeout", "1s")
    assert bad.returncode == 2 and "Traceback" not in bad.err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_as_pid_1_it_reaps_inherited_zombies_and_forwards_sigterm(hb, tmp_path):
    # the command kills its own keeper, so it and its children are orphaned to PID 1: hbwrap
    script = tmp_path / "orphan.sh"
    script.write_text("sh -c 'sleep 0.3 & sleep 0.3 & wait' &\nkill -9 $PPID\nexec sleep 30\n")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", hb.bin, "run", "--name", "pid1",
                             "--grace", "0.5s", "--restart", "on-failure", "--backoff", "30s", "--",
                             "sh", str(script), hb.tag],
                            env=hb.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def init_pid():
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:  # either file can vanish with its process at any moment
                        status = open(f"/proc/{entry}/status").read()
                        cmdline = open(f"/proc/{entry}/cmdline").read()
                    except OSError:
                        continue
                    if re.search(r"^NSpid:\s+\d+\s+1$", status, re.M) and "hbwrap" in cmdline:
                        return int(entry)
            return None

        pid1 = wait_until(init_pid, 10, what="hbwrap as PID 1 of the new namespace")
        hb.wait_event("pid1", "restart", timeout=15)  # the keeper was lost, the group stopped: back-off now

        def zombies():
            found = []
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        stat = open(f"/proc/{entry}/stat").read()
                    except OSError:
                        continue
                    fields = stat.rsplit(")", 1)[1].split()
                    if fields[0] == "Z" and int(fields[1]) == pid1:
                        found.append(int(entry))
            return found

        assert wait_until(lambda: zombies() == [], 5, seen=zombies), "PID 1 left zombies unreaped"
        os.kill(pid1, 15)  # SIGTERM, as a container runtime sends it to PID 1
        assert proc.wait(timeout=15) == 143
        assert "stop" in [e["event"] for e in hb.event_file("pid1")]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
