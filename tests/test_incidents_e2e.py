"""Incidents, --activity, --repeat-timeout, --dump-signal and retry-after through `hbwrap run`, with real processes."""
import json
import sys
from pathlib import Path

from conftest import names
from hbwrap.model import parse_iso

BUSY = [sys.executable, str(Path(__file__).resolve().parent / "helpers" / "busy.py")]


def stall_of(hb, name):
    return next((e for e in hb.events(name) if e["event"] == "stall"), None)


def test_a_silent_cpu_burner_lives_with_activity_cpu_and_stalls_without(hb):
    burner = [*BUSY, "burncpu", "2.5", hb.tag]  # silent, busy for 2.5 s of CPU, then done
    kept = hb.run("run", "--name", "burn", "--response-timeout", "0.8s", "--activity", "cpu", "--grace", "0.3s",
                  "--restart", "never", "--", *burner, timeout=60)
    assert kept.returncode == 0, kept
    assert "stall" not in names(hb.events("burn"))
    cut = hb.run("run", "--name", "burn2", "--response-timeout", "0.8s", "--grace", "0.3s", "--restart", "never",
                 "--", *burner, timeout=60)
    assert cut.returncode == 124, cut


def test_a_silent_sleep_still_stalls_with_activity_cpu_io(hb):
    r = hb.run("run", "--name", "sleepy", "--response-timeout", "0.8s", "--activity", "cpu,io", "--grace", "0.3s",
               "--restart", "never", "--", *BUSY, "idle", hb.tag, timeout=30)
    assert r.returncode == 124, r
    stall = stall_of(hb, "sleepy")
    assert stall["reason"] == "response" and "no output and 0.0% CPU, 0 bytes I/O" in stall["detail"], stall


def test_a_steady_silent_writer_lives_with_activity_io(hb):
    script = f"for i in $(seq 40); do head -c 4096 /dev/zero >> {hb.path('out.bin')}; sleep 0.05; done"
    r = hb.run("run", "--name", "writer", "--response-timeout", "0.8s", "--activity", "io", "--grace", "0.3s",
               "--restart", "never", "--", "sh", "-c", script, hb.tag, timeout=30)
    assert r.returncode == 0, r
    assert "stall" not in names(hb.events("writer"))


def test_a_looping_printer_is_a_repeat_stall_and_a_progressing_one_is_not(hb):
    loop = "i=0; while true; do i=$((i+1)); echo \"retry $i failed: HTTP 429 (request id $(printf %08x $i))\"; sleep 0.05; done"
    r = hb.run("run", "--name", "loop", "--repeat-timeout", "1s", "--grace", "0.3s", "--restart", "never",
               "--", "sh", "-c", loop, hb.tag, timeout=30)
    assert r.returncode == 124, r
    assert stall_of(hb, "loop")["reason"] == "repeat"
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa"
    progress = f"for a in {words}; do for b in {words}; do echo \"page $a $b done\"; done; sleep 0.1; done"
    r = hb.run("run", "--name", "pages", "--repeat-timeout", "1s", "--", "sh", "-c", progress, hb.tag, timeout=30)
    assert r.returncode == 0, r


def test_an_incident_shows_the_tree_its_sockets_and_masks_secrets(hb):
    r = hb.run("run", "--name", "net", "--response-timeout", "1s", "--grace", "0.3s", "--restart", "never",
               "--", *BUSY, "pair", hb.path("port"), "--token=hunter2-secret", hb.tag, timeout=30)
    assert r.returncode == 124, r
    stall = stall_of(hb, "net")
    shown = hb.run("incident", "net")
    assert shown.returncode == 0, shown
    assert "ESTABLISHED" in shown.out and "LISTEN" in shown.out, shown.out
    assert "hunter2-secret" not in shown.out and "--token=***" in shown.out, shown.out
    inc = json.loads(hb.run("incident", "net", "--json").out)
    assert inc["id"] == stall["incident"] and inc["reason"] == "response"
    procs = inc["tree"]["processes"]
    assert len(procs) >= 3, procs  # the keeper, the command, its child
    assert "hunter2-secret" not in json.dumps(inc)
    assert hb.run("incident", "net", "--attempt", "7").returncode == 1


def test_a_python_stack_dump_reaches_the_log_and_the_incident_before_the_kill(hb):
    agent = ("import faulthandler, signal, sys, time\n"
             "faulthandler.register(signal.SIGUSR1)\n"
             "print('waiting for the page', flush=True)\n"
             "def wait_for_page():\n    time.sleep(60)\n"
             "wait_for_page()\n")
    r = hb.run("run", "--name", "dump", "--response-timeout", "1s", "--dump-signal", "USR1", "--dump-wait", "1s",
               "--grace", "0.3s", "--restart", "never", "--", sys.executable, "-c", agent, hb.tag, timeout=30)
    assert r.returncode == 124, r
    assert b"wait_for_page" in hb.log_bytes("dump"), "the dump is in the log"
    ev = hb.events("dump")
    kills = [(e["signal"], e.get("reason")) for e in ev if e["event"] == "kill"]
    assert kills[0] == ("SIGUSR1", "dump") and kills[1][0] == "SIGTERM", kills
    t = [parse_iso(e["ts"]) for e in ev if e["event"] == "kill"]
    assert t[1] - t[0] >= 0.9, "the kill signal waits --dump-wait"
    inc = json.loads(hb.run("incident", "dump", "--json").out)
    assert "wait_for_page" in (inc["stack_dump"] or ""), inc["stack_dump"]


def test_retry_after_sets_the_delay_and_one_past_the_deadline_escalates_at_once(hb):
    r = hb.run("run", "--name", "rate", "--restart", "on-failure", "--max-restarts", "1",
               "--", "sh", "-c", 'echo "retry-after: 2s"; exit 3', hb.tag, timeout=30)
    ev = hb.events("rate")
    restart = next(e for e in ev if e["event"] == "restart")
    assert restart["reason"] == "retry-after" and restart["delay_s"] == 2.0, restart
    starts = [parse_iso(e["ts"]) for e in ev if e["event"] == "attempt_start"]
    assert starts[1] - starts[0] >= 2.0, starts
    assert r.returncode == 3, r
    late = hb.run("run", "--name", "late", "--restart", "on-failure", "--deadline", "30s",
                  "--", "sh", "-c", 'echo "retry-after: 15m"; exit 3', hb.tag, timeout=30)
    assert late.returncode == 124 and late.elapsed < 10, late
    assert hb.events("late")[-1]["reason"] == "deadline"


def test_the_alert_command_gets_the_incident_path(hb):
    seen = hb.path("seen")
    r = hb.run("run", "--name", "alerted", "--response-timeout", "0.5s", "--grace", "0.3s", "--restart", "never",
               "--alert-cmd", f'echo "$HBWRAP_EVENT $HBWRAP_INCIDENT" >> {seen}', "--",
               *BUSY, "idle", hb.tag, timeout=30)
    assert r.returncode == 124, r
    stall_line = next(line for line in open(seen).read().splitlines() if line.startswith("stall "))
    path = stall_line.split(" ", 1)[1]
    assert json.load(open(path))["reason"] == "response"
