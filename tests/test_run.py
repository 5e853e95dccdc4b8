"""`hbwrap run` end to end: real supervisor, keeper and command processes (tests/helpers/agent.py).

Timings are short (0.3-2 s) with margins meant to hold on a loaded 2-core machine; waits are bounded polls.
"""
import hashlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import threading
import time

import pytest

from conftest import alive, names, read_pid, vm_hwm_kib, wait_until

STATUS_KEYS = {"name", "status", "attempt", "restarts", "child_pid", "supervisor_pid", "checkpoint",
               "last_output_at", "last_progress_at", "exit_code"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


def count_lines(path) -> int:
    try:
        with open(path) as f:
            return len(f.read().split())
    except FileNotFoundError:
        return 0


def agent_bytes(n: int, seed: int) -> bytes:
    """What agent step bytes:N:SEED writes."""
    rng = random.Random(seed)
    out, remaining = [], n
    while remaining:
        chunk = min(remaining, 65536)
        out.append(rng.randbytes(chunk))
        remaining -= chunk
    return b"".join(out)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hbmessages(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("hbwrap:")]


def wait_for_output(hb, name, needle: bytes, timeout=10.0):
    log = hb.job_dir(name) / "output.log"

    def content():
        try:
            return log.read_bytes()
        except FileNotFoundError:
            return b""

    wait_until(lambda: needle in content(), timeout, what=f"{needle!r} in {log}", seen=lambda: content()[-300:])


# --- stalls ---------------------------------------------------------------------------------------

def test_silent_hang_is_a_response_stall_and_the_child_dies(hb):
    pidfile = hb.path("pid")
    r = hb.run("run", "--name", "silent", "--response-timeout", "0.5", "--grace", "0.5", "--restart", "never",
               "--", *hb.agent("pidfile:" + pidfile, "print:started", "hang"))
    assert r.returncode == 124, r
    assert 0.5 <= r.elapsed < 6, r
    assert "started" in r.out
    assert not alive(read_pid(pidfile))
    ev = hb.events("silent")
    assert [e["reason"] for e in ev if e["event"] == "stall"] == ["response"], ev
    assert names(ev)[-1] == "escalate"
    assert any(e["event"] == "kill" for e in ev)
    row = hb.status("silent")[0]
    assert row["status"] == "escalated" and row["exit_code"] == 124, row
    assert any("stalled" in m for m in hbmessages(r.err)), r
    assert r.err.splitlines() == hbmessages(r.err), "every message of hbwrap's own starts with 'hbwrap:'"
    assert hb.leftovers() == []


def test_output_without_progress_is_a_progress_stall(hb):
    r = hb.run("run", "--name", "busy", "--progress-timeout", "0.6", "--response-timeout", "5", "--grace", "0.5",
               "--restart", "never", "--", *hb.agent("loop:0.05"))
    assert r.returncode == 124, r
    assert r.out.count("working") >= 3, r
    assert [e["reason"] for e in hb.events("busy") if e["event"] == "stall"] == ["progress"]


def test_timeout_limits_an_attempt_that_is_alive_and_progressing(hb):
    r = hb.run("run", "--name", "long", "--timeout", "0.8", "--progress-timeout", "5", "--grace", "0.5",
               "--restart", "never", "--", *hb.agent("cps:1000:0.05"))
    assert r.returncode == 124, r
    assert 0.8 <= r.elapsed < 6, r
    stalls = [e for e in hb.events("long") if e["event"] == "stall"]
    assert [e["reason"] for e in stalls] == ["timeout"], stalls


def test_stderr_output_is_a_sign_of_life(hb):
    r = hb.run("run", "--name", "errlife", "--response-timeout", "0.8", "--grace", "0.3", "--restart", "never",
               "--", "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo alive >&2; sleep 0.2; done", hb.tag)
    assert r.returncode == 0, r
    assert r.err.count("alive") == 8, r
    assert "stall" not in names(hb.events("errlife"))


def test_progress_marker_on_stderr(hb):
    r = hb.run("run", "--name", "errcp", "--", *hb.agent("err:checkpoint: from-stderr", "exit:0"))
    assert r.returncode == 0, r
    assert hb.status("errcp")[0]["checkpoint"] == "from-stderr"
    assert [e["checkpoint"] for e in hb.events("errcp") if e["event"] == "checkpoint"] == ["from-stderr"]


def test_custom_progress_pattern_sets_the_checkpoint(hb):
    r = hb.run("run", "--name", "custom", "--progress-pattern", r"fetched page (\d+)", "--progress-timeout", "0.8",
               "--grace", "0.3", "--restart", "never",
               "--", "sh", "-c", "for i in 1 2 3 4 5 6; do echo fetched page $i; sleep 0.25; done", hb.tag)
    assert r.returncode == 0, r
    assert hb.status("custom")[0]["checkpoint"] == "6"
    assert "stall" not in names(hb.events("custom"))


def test_start_grace_delays_the_response_clock(hb):
    # silent for 1 s, then done: --response-timeout 0.5 alone would stall it, a 2.5 s start grace does not
    r = hb.run("run", "--name", "grace", "--response-timeout", "0.5", "--start-grace", "2.5", "--grace", "0.3",
               "--restart", "never", "--", *hb.agent("sleep:1", "exit:0"))
    assert r.returncode == 0, r
    assert "stall" not in names(hb.events("grace"))


def test_heartbeat_only_job_survives_a_response_timeout(hb):
    r = hb.run("run", "--name", "beats", "--response-timeout", "1", "--grace", "0.3", "--restart", "never",
               "--", *hb.agent("beats:2:0.1", "exit:0"))
    assert r.returncode == 0, r
    assert r.elapsed >= 2, r
    assert r.out == "", r
    assert "stall" not in names(hb.events("beats"))


def test_checkpoint_file_changes_are_progress(hb):
    steps = [s for v in "abcde" for s in ("cpfile:" + v, "sleep:0.3")]
    r = hb.run("run", "--name", "cpf", "--progress-timeout", "1", "--grace", "0.3", "--restart", "never",
               "--", *hb.agent(*steps, "exit:0"))
    assert r.returncode == 0, r
    assert r.elapsed >= 1.5, r
    ev = hb.events("cpf")
    assert "stall" not in names(ev)
    assert hb.status("cpf")[0]["checkpoint"] == "e"
    assert [e["checkpoint"] for e in ev if e["event"] == "checkpoint"][-1] == "e"


def test_checkpoint_written_at_once_by_the_command_is_seen(hb):
    # a race, so it is given 30 chances: each attempt writes its own checkpoint at once, then fails
    seen = hb.path("seen")
    script = f'echo "$HBWRAP_ATTEMPT ${{HBWRAP_RESUME_FROM:-none}}" >> {seen}; echo "v$HBWRAP_ATTEMPT" > "$HBWRAP_CHECKPOINT_FILE"; exit 1'
    r = hb.run("run", "--name", "fastcp", "--restart", "on-failure", "--max-restarts", "29", "--backoff", "0.001",
               "--backoff-max", "0.001", "--", "sh", "-c", script, hb.tag, timeout=60)
    assert r.returncode == 1, r
    lines = open(seen).read().split("\n")[:-1]
    assert len(lines) == 30, lines
    missed = [line for line in lines[1:] if line.split()[1] != f"v{int(line.split()[0]) - 1}"]
    assert missed == [], f"attempts that did not get the previous attempt's checkpoint: {missed}"


def test_rewriting_the_same_checkpoint_is_not_progress(hb):
    steps = [s for _ in range(6) for s in ("cpfile:same", "sleep:0.2")]
    r = hb.run("run", "--name", "samecp", "--progress-timeout", "0.6", "--grace", "0.3", "--restart", "never",
               "--", *hb.agent(*steps, "exit:0"))
    assert r.returncode == 124, r
    assert [e["reason"] for e in hb.events("samecp") if e["event"] == "stall"] == ["progress"]


def test_hbwrap_checkpoint_inside_a_shell_command(hb):
    script = (f'for i in 1 2 3 4; do "{hb.bin}" checkpoint "step-$i" || exit 9; sleep 0.5; done; '
              f'cat "$HBWRAP_CHECKPOINT_FILE"')
    r = hb.run("run", "--name", "shcp", "--progress-timeout", "1.5", "--grace", "0.3", "--restart", "never",
               "--", "sh", "-c", script, hb.tag)
    assert r.returncode == 0, r
    assert r.elapsed >= 2, r
    assert r.out.strip() == "step-4", r
    assert "stall" not in names(hb.events("shcp"))
    assert hb.status("shcp")[0]["checkpoint"] == "step-4"


def test_hbwrap_beat_inside_a_shell_command(hb):
    script = f'for i in 1 2 3 4; do "{hb.bin}" beat || exit 9; sleep 0.5; done'
    r = hb.run("run", "--name", "shbeat", "--response-timeout", "1.5", "--grace", "0.3", "--restart", "never",
               "--", "sh", "-c", script, hb.tag)
    assert r.returncode == 0, r
    assert r.elapsed >= 2, r
    assert "stall" not in names(hb.events("shbeat"))


def test_silent_shell_command_without_beats_does_stall(hb):
    # the control for the test above: the same rhythm without `hbwrap beat` is a response stall
    r = hb.run("run", "--name", "shsilent", "--response-timeout", "1.5", "--grace", "0.3", "--restart", "never",
               "--", "sh", "-c", "sleep 3", hb.tag)
    assert r.returncode == 124, r
    assert [e["reason"] for e in hb.events("shsilent") if e["event"] == "stall"] == ["response"]


def test_failing_probe_is_a_probe_stall(hb):
    r = hb.run("run", "--name", "probefail", "--probe", "exit 1", "--probe-interval", "0.1", "--probe-failures", "2",
               "--grace", "0.3", "--restart", "never", "--", *hb.agent("loop:0.05"))
    assert r.returncode == 124, r
    assert r.elapsed < 6, r
    assert [e["reason"] for e in hb.events("probefail") if e["event"] == "stall"] == ["probe"]


def test_probe_running_past_its_timeout_is_a_failure(hb):
    r = hb.run("run", "--name", "probeslow", "--probe", "sleep 5", "--probe-interval", "0.1", "--probe-timeout", "0.2",
               "--probe-failures", "2", "--grace", "0.3", "--restart", "never", "--", *hb.agent("loop:0.05"))
    assert r.returncode == 124, r
    assert r.elapsed < 6, r
    assert [e["reason"] for e in hb.events("probeslow") if e["event"] == "stall"] == ["probe"]


def test_passing_probe_is_not_a_sign_of_life(hb):
    # SPEC §2: a healthy browser (its probe passes) must not hide a page load that hung
    marker = hb.path("probed")
    r = hb.run("run", "--name", "probeok", "--response-timeout", "0.6", "--probe", f"touch {marker}",
               "--probe-interval", "0.1", "--grace", "0.3", "--restart", "never", "--", *hb.agent("sleep:5", "exit:0"))
    assert r.returncode == 124, r
    assert os.path.exists(marker)
    assert [e["reason"] for e in hb.events("probeok") if e["event"] == "stall"] == ["response"]


def test_probe_stall_says_why_the_probe_failed(hb):
    r = hb.run("run", "--name", "probewhy", "--probe", "exit 3", "--probe-interval", "0.1", "--probe-failures", "2",
               "--grace", "0.3", "--restart", "never", "--", *hb.agent("sleep:5", "exit:0"))
    assert r.returncode == 124, r
    stall = next(e for e in hb.events("probewhy") if e["event"] == "stall")
    assert stall["reason"] == "probe" and "exited with code 3" in stall["detail"], stall


# --- stopping the child group ----------------------------------------------------------------------

def test_term_ignoring_child_is_killed_after_grace(hb):
    pidfile = hb.path("pid")
    r = hb.run("run", "--name", "stubborn", "--timeout", "0.5", "--grace", "0.8", "--restart", "never",
               "--", *hb.agent("ignoreterm", "pidfile:" + pidfile, "hang"))
    assert r.returncode == 124, r
    assert 1.3 <= r.elapsed < 6, r
    assert not alive(read_pid(pidfile))
    kills = [e["signal"] for e in hb.events("stubborn") if e["event"] == "kill"]
    assert kills[0] == "SIGTERM" and "SIGKILL" in kills, kills


def test_kill_signal_option_is_the_first_signal(hb):
    r = hb.run("run", "--name", "intfirst", "--timeout", "0.4", "--kill-signal", "INT", "--grace", "20",
               "--restart", "never", "--", *hb.agent("hang"))
    assert r.returncode == 124, r
    assert r.elapsed < 15, r  # the agent dies of SIGINT at once: no wait for the 20 s grace
    ev = hb.events("intfirst")
    assert [e["signal"] for e in ev if e["event"] == "kill"] == ["SIGINT"]
    assert [e.get("signal") for e in ev if e["event"] == "exit"] == ["SIGINT"]


def test_grandchild_ignoring_term_is_killed(hb):
    pidfile, gpidfile = hb.path("pid"), hb.path("gpid")
    r = hb.run("run", "--name", "gc", "--timeout", "0.5", "--grace", "0.5", "--restart", "never",
               "--", *hb.agent("pidfile:" + pidfile, "grandchild:" + gpidfile, "hang"))
    assert r.returncode == 124, r
    child, grandchild = read_pid(pidfile), read_pid(gpidfile)
    assert not alive(child)
    assert not alive(grandchild), "a grandchild ignoring SIGTERM must be SIGKILLed after --grace"
    assert hb.leftovers() == []


@pytest.mark.parametrize("ending, code", [
    (["hang"], 124),     # the attempt is stopped for a stall
    (["exit:0"], 0),     # the command succeeds, leaving the daemon behind
    (["exit:4"], 4),     # the command fails, leaving the daemon behind
])
def test_escaped_daemon_is_killed_when_the_run_ends(hb, ending, code):
    daemon_file = hb.path("daemon")
    r = hb.run("run", "--name", "daemon", "--timeout", "1", "--grace", "0.5", "--restart", "never",
               "--", *hb.agent("escape:" + daemon_file, *ending))
    assert r.returncode == code, r
    daemon = read_pid(daemon_file)
    assert not alive(daemon), "a setsid double-forked daemon must not outlive its run"
    assert hb.leftovers() == []


def test_background_process_left_by_a_successful_command_is_stopped(hb):
    pidfile = hb.path("bg")
    r = hb.run("run", "--name", "bg", "--", "sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo done", hb.tag)
    assert r.returncode == 0, r
    assert r.elapsed < 8, r
    assert "done" in r.out
    assert not alive(read_pid(pidfile))


def test_stopped_group_has_no_member_left(hb):
    pidfile = hb.path("pid")
    r = hb.run("run", "--name", "group", "--timeout", "0.5", "--grace", "0.5", "--restart", "never",
               "--", "sh", "-c", f"echo $$ > {pidfile}; sleep 30 & sleep 30 & wait", hb.tag)
    assert r.returncode == 124, r
    pgid = read_pid(pidfile)
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and alive(int(entry)):
                    members.append(int(entry))
            except OSError:
                pass
    assert members == [], f"processes of group {pgid} left: {members}"


# --- restarts, resume, escalation ------------------------------------------------------------------

def test_stall_restart_resumes_from_checkpoint(hb):
    count, env = hb.path("count"), hb.path("env.json")
    r = hb.run("run", "--name", "resume", "--response-timeout", "0.5", "--grace", "0.3", "--backoff", "0.05",
               "--", *hb.agent("count:" + count, "cp:page-42", "hangfirst:1", "env:" + env, "exit:0"))
    assert r.returncode == 0, r
    assert count_lines(count) == 2
    seen = json.load(open(env))
    assert seen["HBWRAP_RESUME_FROM"] == "page-42"
    assert seen["HBWRAP_ATTEMPT"] == "2"
    assert seen["HBWRAP_JOB"] == "resume"
    ev = hb.events("resume")
    for expected in ("run_start", "attempt_start", "checkpoint", "stall", "kill", "exit", "restart", "success"):
        assert expected in names(ev), ev
    restart = next(e for e in ev if e["event"] == "restart")
    assert 0.025 <= restart["delay_s"] <= 0.05, restart
    assert [e["attempt"] for e in ev if e["event"] == "attempt_start"] == [1, 2]
    assert len({e["run_id"] for e in ev}) == 1
    row = hb.status("resume")[0]
    assert (row["status"], row["attempt"], row["restarts"], row["checkpoint"], row["exit_code"]) == \
        ("succeeded", 2, 1, "page-42", 0), row


def test_restart_resumes_from_the_checkpoint_file(hb):
    count, env = hb.path("count"), hb.path("env.json")
    r = hb.run("run", "--name", "resumefile", "--response-timeout", "0.5", "--grace", "0.3", "--backoff", "0.05",
               "--", *hb.agent("count:" + count, "cpfile:row-17", "hangfirst:1", "env:" + env, "exit:0"))
    assert r.returncode == 0, r
    assert json.load(open(env))["HBWRAP_RESUME_FROM"] == "row-17"


def test_no_resume_withholds_the_checkpoint(hb):
    count, env = hb.path("count"), hb.path("env.json")
    r = hb.run("run", "--name", "noresume", "--no-resume", "--response-timeout", "0.5", "--grace", "0.3",
               "--backoff", "0.05", "--", *hb.agent("count:" + count, "cp:page-42", "hangfirst:1", "env:" + env, "exit:0"))
    assert r.returncode == 0, r
    seen = json.load(open(env))
    assert "HBWRAP_RESUME_FROM" not in seen
    assert seen["HBWRAP_ATTEMPT"] == "2"


def test_restarts_are_bounded_then_escalate(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "doomed", "--response-timeout", "0.3", "--grace", "0.2", "--max-restarts", "2",
               "--backoff", "0.05", "--", *hb.agent("count:" + count, "hang"))
    assert r.returncode == 124, r
    assert count_lines(count) == 3
    ev = hb.events("doomed")
    assert names(ev).count("restart") == 2
    assert names(ev).count("stall") == 3
    escalate = ev[-1]
    assert escalate["event"] == "escalate" and escalate["exit_code"] == 124, escalate
    row = hb.status("doomed")[0]
    assert (row["status"], row["restarts"], row["attempt"]) == ("escalated", 2, 3), row
    assert hb.leftovers() == []


def test_backoff_grows_between_restarts(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "backoff", "--restart", "on-failure", "--max-restarts", "3", "--backoff", "0.2",
               "--", *hb.agent("count:" + count, "exit:1"))
    assert r.returncode == 1, r
    delays = [e["delay_s"] for e in hb.events("backoff") if e["event"] == "restart"]
    assert len(delays) == 3, delays
    for k, d in enumerate(delays, 1):
        nominal = 0.2 * 2 ** (k - 1)
        assert 0.5 * nominal - 0.001 <= d <= nominal + 0.001, (k, delays)
    assert r.elapsed >= sum(delays), r


def test_deadline_across_attempts_escalates_with_124(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "deadline", "--deadline", "1.5", "--response-timeout", "0.4", "--grace", "0.2",
               "--max-restarts", "100", "--backoff", "0.05", "--", *hb.agent("count:" + count, "hang"))
    assert r.returncode == 124, r
    assert 1.5 <= r.elapsed < 6, r
    assert count_lines(count) >= 2
    ev = hb.events("deadline")
    assert ev[-1]["event"] == "escalate" and ev[-1]["reason"] == "deadline", ev[-1]
    assert hb.leftovers() == []


def test_deadline_stops_a_lively_attempt(hb):
    pidfile = hb.path("pid")
    r = hb.run("run", "--name", "deadline1", "--deadline", "0.8", "--grace", "0.3",
               "--", *hb.agent("pidfile:" + pidfile, "cps:1000:0.05"))
    assert r.returncode == 124, r
    assert 0.8 <= r.elapsed < 5, r
    assert not alive(read_pid(pidfile))
    ev = hb.events("deadline1")
    assert [e["reason"] for e in ev if e["event"] == "stall"] == ["deadline"]
    assert ev[-1]["event"] == "escalate" and ev[-1]["reason"] == "deadline"


def test_deadline_during_backoff(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "deadline2", "--deadline", "0.8", "--restart", "on-failure", "--backoff", "30",
               "--", *hb.agent("count:" + count, "exit:1"))
    assert r.returncode == 124, r
    assert r.elapsed < 5, r
    assert count_lines(count) == 1
    assert hb.events("deadline2")[-1]["event"] == "escalate"


def test_signal_during_backoff_stops_the_run(hb):
    count = hb.path("count")
    proc = hb.start("run", "--name", "waiting", "--restart", "on-failure", "--backoff", "30",
                    "--", *hb.agent("count:" + count, "exit:1"))
    wait_until(lambda: hb.state("waiting")["status"] == "backoff" if (hb.job_dir("waiting") / "state.json").exists()
               else False, 10, what="status backoff")
    assert hb.status("waiting")[0]["status"] == "backoff"
    proc.send_signal(signal.SIGTERM)
    r = hb.finish(proc, timeout=10)
    assert r.returncode == 143, r
    assert count_lines(count) == 1
    ev = hb.events("waiting")
    assert ev[-1]["event"] == "stop" and names(ev).count("attempt_start") == 1, ev
    assert hb.status("waiting")[0]["status"] == "stopped"


def test_fatal_pattern_prevents_the_retry(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "fatal", "--restart", "on-failure", "--backoff", "0.05",
               "--fatal-pattern", "account suspended", "--",
               *hb.agent("count:" + count, "err:ERROR: account suspended", "exit:1"))
    assert r.returncode == 1, r
    assert count_lines(count) == 1
    ev = hb.events("fatal")
    assert "restart" not in names(ev)
    assert ev[-1]["event"] == "escalate" and ev[-1]["reason"] == "fatal", ev[-1]


def test_fatal_pattern_prevents_the_restart_after_a_stall(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "fatalstall", "--response-timeout", "0.4", "--grace", "0.2", "--backoff", "0.05",
               "--fatal-pattern", "^captcha", "--", *hb.agent("count:" + count, "print:captcha shown", "hang"))
    assert r.returncode == 124, r
    assert count_lines(count) == 1
    assert "restart" not in names(hb.events("fatalstall"))


def test_restart_on_failure_retries_a_failing_command(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "flaky", "--restart", "on-failure", "--max-restarts", "3", "--backoff", "0.05",
               "--", *hb.agent("count:" + count, "failfirst:2:5", "print:finally", "exit:0"))
    assert r.returncode == 0, r
    assert count_lines(count) == 3
    assert "finally" in r.out
    ev = hb.events("flaky")
    assert [e.get("exit_code") for e in ev if e["event"] == "exit"] == [5, 5, 0]


def test_default_restart_mode_does_not_retry_failures(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "once", "--backoff", "0.05", "--", *hb.agent("count:" + count, "exit:5"))
    assert r.returncode == 5, r
    assert count_lines(count) == 1
    assert hb.status("once")[0]["status"] == "failed"


def test_retry_exit_codes_limits_what_is_retried(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "codes", "--restart", "on-failure", "--retry-exit-codes", "75,76", "--max-restarts", "5",
               "--backoff", "0.05", "--", *hb.agent("count:" + count, "failfirst:2:75", "exit:3"))
    assert r.returncode == 3, r
    assert count_lines(count) == 3  # 75, 75 retried; 3 is not


def test_restarts_exhausted_on_failure_keeps_the_commands_code(hb):
    count = hb.path("count")
    r = hb.run("run", "--name", "exhaust", "--restart", "on-failure", "--max-restarts", "1", "--backoff", "0.05",
               "--", *hb.agent("count:" + count, "exit:9"))
    assert r.returncode == 9, r
    assert count_lines(count) == 2
    assert hb.events("exhaust")[-1]["event"] == "escalate"


# --- exec errors, exit codes -----------------------------------------------------------------------

@pytest.mark.parametrize("restart", ["on-stall", "on-failure"])
def test_missing_command_is_127_and_never_retried(hb, restart):
    r = hb.run("run", "--name", "missing", "--restart", restart, "--backoff", "0.05", "--", hb.path("no-such-program"))
    assert r.returncode == 127, r
    assert "Traceback" not in r.err
    assert hbmessages(r.err), r
    ev = hb.events("missing")
    assert "restart" not in names(ev) and names(ev).count("attempt_start") <= 1, ev


def test_missing_command_on_path_is_127(hb):
    r = hb.run("run", "--name", "nopath", "--", "hbwrap-no-such-program-xyz")
    assert r.returncode == 127, r
    assert "Traceback" not in r.err


@pytest.mark.parametrize("what", ["file", "dir"])
def test_non_executable_is_126_and_never_retried(hb, what):
    target = hb.tmp / "target"
    if what == "file":
        target.write_text("#!/bin/sh\necho hi\n")
        target.chmod(0o644)
    else:
        target.mkdir()
    r = hb.run("run", "--name", "noexec", "--restart", "on-failure", "--backoff", "0.05", "--", str(target))
    assert r.returncode == 126, r
    assert "Traceback" not in r.err
    assert "restart" not in names(hb.events("noexec"))


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_code_passthrough(hb, code):
    r = hb.run("run", "--name", f"code{code}", "--", *hb.agent(f"exit:{code}"))
    assert r.returncode == code, r
    status = hb.status(f"code{code}")[0]
    assert status["exit_code"] == code
    assert status["status"] == ("succeeded" if code == 0 else "failed")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_death_by_signal_is_128_plus_s(hb, sig):
    r = hb.run("run", "--name", "selfkill", "--", *hb.agent(f"selfkill:{int(sig)}"))
    assert r.returncode == 128 + sig, r
    ev = hb.events("selfkill")
    exits = [e for e in ev if e["event"] == "exit"]
    assert len(exits) == 1 and exits[0].get("signal") in (sig.name, int(sig)), exits
    assert "restart" not in names(ev)


def test_death_by_signal_with_restart_never(hb):
    r = hb.run("run", "--name", "selfkill9", "--restart", "never", "--", *hb.agent("selfkill:9"))
    assert r.returncode == 137, r


# --- output ----------------------------------------------------------------------------------------

def test_binary_output_passes_through_byte_for_byte(hb):
    n, seed = 5_000_000, 7
    expected = sha(agent_bytes(n, seed))
    r = hb.run("run", "--name", "binary", "--", *hb.agent(f"bytes:{n}:{seed}"))
    assert r.returncode == 0, r.returncode
    assert len(r.stdout) == n
    assert sha(r.stdout) == expected
    assert sha(hb.log_bytes("binary")) == expected


def test_rotation_keeps_one_rotated_log(hb):
    n, seed, max_size = 3_000_000, 11, 256_000
    data = agent_bytes(n, seed)
    r = hb.run("run", "--name", "rotate", "--log-max-size", str(max_size), "--", *hb.agent(f"bytes:{n}:{seed}"),
               stdout=subprocess.DEVNULL)
    assert r.returncode == 0, r
    d = hb.job_dir("rotate")
    current, rotated = (d / "output.log").read_bytes(), (d / "output.log.1").read_bytes()
    assert not (d / "output.log.2").exists()
    assert sorted(p.name for p in d.iterdir() if p.name.startswith("output.log")) == ["output.log", "output.log.1"]
    # rotation happens at the first write past the limit (a write is at most 1 MiB), and waits while the
    # supervisor has not yet read the log it would delete (bounded: 4 x limit + 16 MiB)
    for part in (current, rotated):
        assert len(part) <= max_size * 4 + 17 * 1024 * 1024, len(part)
    assert data.endswith(rotated + current), "the two kept logs must be the end of the output, in order"
    logs = hb.run("logs", "rotate", "-n", "1")
    assert logs.returncode == 0 and data.endswith(logs.stdout), logs


def test_binary_passthrough_survives_log_rotation(hb):
    n, seed = 5_000_000, 3
    expected = agent_bytes(n, seed)
    r = hb.run("run", "--name", "rotbin", "--log-max-size", "100KB", "--", *hb.agent(f"bytes:{n}:{seed}"))
    assert r.returncode == 0, r.returncode
    assert (len(r.stdout), sha(r.stdout)) == (n, sha(expected))


def test_no_trailing_newline_and_invalid_utf8_pass_through(hb):
    out_bytes = b"\xff\xfe\x00raw \xc3( \xe2\x82 end-without-newline"
    err_bytes = b"\x80err\xc0\xaf"
    r = hb.run("run", "--name", "rawout", "--",
               *hb.agent("print:first", "raw:" + out_bytes.hex(), "rawerr:" + err_bytes.hex()))
    assert r.returncode == 0, r
    assert r.stdout == b"first\n" + out_bytes
    non_hb = b"\n".join(line for line in r.stderr.split(b"\n") if not line.startswith(b"hbwrap:"))
    assert non_hb.rstrip(b"\n") == err_bytes, r
    log = hb.log_bytes("rawout")
    assert len(log) == len(b"first\n" + out_bytes + err_bytes)
    assert log.startswith(b"first\n") and out_bytes in log and err_bytes in log


def test_final_line_without_newline_is_a_marker(hb):
    r = hb.run("run", "--name", "lastcp", "--", *hb.agent("raw:" + b"checkpoint: tail-7".hex()))
    assert r.returncode == 0, r
    assert hb.status("lastcp")[0]["checkpoint"] == "tail-7"


def test_stdout_and_stderr_are_kept_apart(hb):
    r = hb.run("run", "--name", "apart", "--", *hb.agent("interleave:200"))
    assert r.returncode == 0, r
    assert r.out.splitlines() == [f"out {i}" for i in range(1, 201)]
    assert [line for line in r.err.splitlines() if not line.startswith("hbwrap:")] == \
        [f"err {i}" for i in range(1, 201)]


def test_quiet_success_prints_nothing(hb):
    r = hb.run("run", "--name", "quietok", "--quiet", "--", *hb.agent("print:hello", "err:world", "exit:0"))
    assert r.returncode == 0, r
    assert r.stdout == b"" and r.stderr == b"", r
    assert b"hello" in hb.log_bytes("quietok")


def test_quiet_failure_prints_the_output_and_the_log_path(hb):
    r = hb.run("run", "--name", "quietfail", "--quiet", "--", *hb.agent("print:hello", "err:world", "exit:3"))
    assert r.returncode == 3, r
    assert "hello" in r.out, r
    assert "world" in r.err, r
    assert str(hb.job_dir("quietfail") / "output.log") in r.err, r


def test_quiet_stall_prints_the_output_and_the_reason(hb):
    r = hb.run("run", "--name", "quietstall", "--quiet", "--response-timeout", "0.4", "--grace", "0.2",
               "--restart", "never", "--", *hb.agent("print:before the hang", "hang"))
    assert r.returncode == 124, r
    assert "before the hang" in r.out, r
    assert "stall" in r.err and str(hb.job_dir("quietstall") / "output.log") in r.err, r


def test_pty_mode(hb):
    tty, winsize, env = hb.path("tty"), hb.path("winsize"), hb.path("env.json")
    r = hb.run("run", "--name", "pty", "--pty", "--", *hb.agent("isatty:" + tty, "winsize:" + winsize,
                                                                 "env:" + env, "print:on a terminal"))
    assert r.returncode == 0, r
    assert open(tty).read() == "True"
    assert "on a terminal" in r.out
    seen = json.load(open(env))
    assert seen["PAGER"] == "cat"
    cols = open(winsize).read()
    assert cols != "none" and int(cols.split("x")[0]) >= 200, cols


def _run_many(hb, runs, at_once=8):
    """hbwrap runs [(name, args)], `at_once` of them running at any time: {name: Result}."""
    results, running, todo = {}, [], list(runs)
    while todo or running:
        while todo and len(running) < at_once:
            name, args = todo.pop(0)
            running.append((name, hb.start(*args)))
        name, proc = running.pop(0)
        results[name] = hb.finish(proc, timeout=60)
    return results


def test_pty_stays_open_while_a_command_that_closed_its_output_runs(hb):
    # the pty's last slave descriptor goes while the command still runs: closing the master then would hang
    # up its terminal (SIGHUP, exit 129), as it did for these in most runs (issue 12)
    closer = "import os,time; os.write(1,b'bye\\n'); os.close(1); os.close(2); time.sleep(0.3)"
    runs = [(f"close{i}", ("run", "--name", f"close{i}", "--pty", "--", "python3", "-c", closer, hb.tag))
            for i in range(50)]
    runs += [(f"grep{i}", ("run", "--name", f"grep{i}", "--pty", "--", "grep", "-c", "Sig", "/proc/self/status"))
             for i in range(30)]
    results = _run_many(hb, runs)
    bad = {name: r for name, r in results.items() if r.returncode != 0}
    assert not bad, bad
    for i in range(50):
        r = results[f"close{i}"]
        assert b"bye" in r.stdout and b"bye" in hb.log_bytes(f"close{i}"), r
    assert all(results[f"grep{i}"].out.strip().isdigit() for i in range(30)), results["grep0"]


def test_pty_output_written_to_dev_tty_after_closing_stdout_is_kept(hb):
    # the terminal is still the command's: what it writes there after closing stdout and stderr is output too
    script = ("import os,time; os.write(1,b'bye\\n'); os.close(1); os.close(2); time.sleep(0.2); "
              "fd = os.open('/dev/tty', os.O_WRONLY); os.write(fd, b'on the tty\\n'); time.sleep(0.2)")
    r = hb.run("run", "--name", "devtty", "--pty", "--response-timeout", "20s", "--", "python3", "-c", script,
               hb.tag)
    assert r.returncode == 0, r
    assert b"on the tty" in r.stdout and b"on the tty" in hb.log_bytes("devtty"), r


def test_without_pty_stdout_is_not_a_terminal(hb):
    tty = hb.path("tty")
    r = hb.run("run", "--name", "nopty", "--", *hb.agent("isatty:" + tty))
    assert r.returncode == 0, r
    assert open(tty).read() == "False"


# --- environment, stdin, signals -------------------------------------------------------------------

def test_command_environment(hb):
    env = hb.path("env.json")
    r = hb.run("run", "--name", "envjob", "--", *hb.agent("env:" + env))
    assert r.returncode == 0, r
    seen = json.load(open(env))
    assert seen["PYTHONUNBUFFERED"] == "1"
    assert seen["HBWRAP_JOB"] == "envjob"
    assert seen["HBWRAP_ATTEMPT"] == "1"
    assert "HBWRAP_RESUME_FROM" not in seen
    run_ids = {e["run_id"] for e in hb.events("envjob")}
    assert run_ids == {seen["HBWRAP_RUN_ID"]}
    for var in ("HBWRAP_CHECKPOINT_FILE", "HBWRAP_HEARTBEAT_FILE"):
        assert os.path.isabs(seen[var]) and os.path.isdir(os.path.dirname(seen[var])), (var, seen[var])
    assert seen["HBWRAP_STATE_DIR"] == str(hb.state_dir)  # the rest of the environment is passed on


def test_pythonunbuffered_already_set_is_kept(hb):
    env = hb.path("env.json")
    r = hb.run("run", "--name", "unbuf", "--", *hb.agent("env:" + env), env={**hb.env, "PYTHONUNBUFFERED": "x"})
    assert r.returncode == 0, r
    assert json.load(open(env))["PYTHONUNBUFFERED"] == "x"


@pytest.mark.parametrize("mode", [[], ["--pty"]], ids=["pipes", "pty"])
def test_under_a_c_locale_the_command_gets_no_locale_it_was_not_given(hb, mode):
    """cron gives no LANG or LC_*: Python (hbwrap) coerces its own locale to C.UTF-8 and sets LC_CTYPE in its
    os.environ (PEP 538), but the command's environment is exactly hbwrap's own plus HBWRAP_* (SPEC §6)."""
    bare = {k: v for k, v in hb.env.items() if not (k.startswith("LC_") or k in ("LANG", "LANGUAGE"))}
    out = hb.path("env.txt")
    r = hb.run("run", "--name", "cron-env", *mode, "--", "sh", "-c", f"env > {out}", env=bare)
    assert r.returncode == 0, r
    seen = dict(line.split("=", 1) for line in open(out).read().splitlines() if "=" in line)
    assert not [k for k in seen if k.startswith("LC_") or k in ("LANG", "LANGUAGE")], seen
    given = {"PYTHONUNBUFFERED", "PWD", "SHLVL", "_"} | ({"PAGER", "TERM", "COLUMNS", "LINES"} if mode else set())
    added = set(seen) - set(bare)  # (sh adds PWD, SHLVL and _; --pty: PAGER=cat and a wide window, SPEC §9)
    assert added and all(k.startswith("HBWRAP_") or k in given for k in added), added


def test_custom_checkpoint_and_heartbeat_files(hb):
    env, cp = hb.path("env.json"), hb.path("my-checkpoint")
    r = hb.run("run", "--name", "files", "--checkpoint-file", cp, "--heartbeat-file", hb.path("my-heartbeat"),
               "--", *hb.agent("env:" + env, "cpfile:custom-1"))
    assert r.returncode == 0, r
    seen = json.load(open(env))
    assert seen["HBWRAP_CHECKPOINT_FILE"] == cp
    assert seen["HBWRAP_HEARTBEAT_FILE"] == hb.path("my-heartbeat")
    assert hb.status("files")[0]["checkpoint"] == "custom-1"


def test_stdin_is_dev_null_even_when_hbwrap_has_input(hb):
    info = hb.path("stdin.json")
    feed = hb.tmp / "input.txt"
    feed.write_text("secret input\n")
    with open(feed, "rb") as stdin:
        r = hb.run("run", "--name", "stdin", "--", *hb.agent("stdin:" + info), stdin=stdin)
    assert r.returncode == 0, r
    seen = json.load(open(info))
    assert seen["target"] == "/dev/null", seen
    assert seen["read"] == "", seen


def test_pty_mode_keeps_stdin_on_dev_null(hb):
    # only stdout and stderr go to the pty: a program that reads stdin unattended sees EOF, not a hang
    info, tty = hb.path("stdin.json"), hb.path("tty")
    feed = hb.tmp / "input.txt"
    feed.write_text("secret input\n")
    with open(feed, "rb") as stdin:
        r = hb.run("run", "--name", "ptystdin", "--pty", "--response-timeout", "20s", "--restart", "never", "--",
                   *hb.agent("stdin:" + info, "isatty:" + tty), stdin=stdin)
    assert r.returncode == 0, r
    seen = json.load(open(info))
    assert seen["target"] == "/dev/null" and seen["read"] == "" and not seen["isatty"], seen
    assert open(tty).read() == "True"
    r = hb.run("run", "--name", "ptycat", "--pty", "--response-timeout", "20s", "--restart", "never", "--",
               "sh", "-c", "cat; echo after-eof", hb.tag, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "after-eof" in r.out, r


def test_signal_dispositions_are_restored_for_the_command(hb):
    # hbwrap is Python (SIGPIPE ignored); a plain program must get SIGPIPE back at its default,
    # but keep SIGHUP ignored when hbwrap itself was started with SIGHUP ignored (nohup)
    out = hb.path("masks")

    def ignore_hup():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    r = hb.run("run", "--name", "masks", "--", "sh", "-c", f"grep -E '^Sig(Ign|Blk)' /proc/self/status > {out}",
               hb.tag, preexec_fn=ignore_hup)
    assert r.returncode == 0, r
    masks = dict(line.split(":\t") for line in open(out).read().splitlines())
    ignored, blocked = int(masks["SigIgn"], 16), int(masks["SigBlk"], 16)
    bit = lambda sig: 1 << (int(sig) - 1)  # noqa: E731
    assert not ignored & bit(signal.SIGPIPE), masks
    assert ignored & bit(signal.SIGHUP), masks
    assert not ignored & (bit(signal.SIGTERM) | bit(signal.SIGINT)), masks
    assert blocked == 0, masks


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_hbwrap_stops_the_group(hb, sig):
    pidfile, gpidfile = hb.path("pid"), hb.path("gpid")
    proc = hb.start("run", "--name", "sig", "--grace", "0.5",
                    "--", *hb.agent("pidfile:" + pidfile, "grandchild:" + gpidfile, "ready", "hang"))
    wait_for_output(hb, "sig", b"READY")
    child, grandchild = read_pid(pidfile), read_pid(gpidfile)
    proc.send_signal(sig)
    r = hb.finish(proc, timeout=15)
    assert r.returncode == 128 + sig, r
    assert not alive(child) and not alive(grandchild)
    assert hb.leftovers() == []
    ev = hb.events("sig")
    assert ev[-1]["event"] == "stop", ev[-1]
    assert "restart" not in names(ev)
    row = hb.status("sig")[0]
    assert row["status"] == "stopped" and row["exit_code"] == 128 + sig, row


# --- files and inspection commands -----------------------------------------------------------------

def test_state_files_are_private_even_with_umask_0(hb):
    # the checkpoint and heartbeat files are written by `hbwrap checkpoint` / `hbwrap beat`: hbwrap's files too
    script = (f'for part in 1 2 3; do i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); done; sleep 0.2; done; '
              f'"{hb.bin}" checkpoint x && "{hb.bin}" beat')
    r = hb.run("run", "--name", "private", "--log-max-size", "2000", "--", "sh", "-c", script, hb.tag,
               preexec_fn=lambda: os.umask(0))
    assert r.returncode == 0, r
    assert stat.S_IMODE(hb.state_dir.stat().st_mode) == 0o700
    job = hb.job_dir("private")
    assert stat.S_IMODE(job.stat().st_mode) == 0o700
    files = list(job.iterdir())
    for expected in ("output.log.1", "checkpoint", "heartbeat", "state.json", "events.jsonl"):
        assert any(p.name == expected for p in files), (expected, files)
    loose = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files if p.stat().st_mode & 0o077}
    assert loose == {}, f"files with group/world access: {loose}"


def test_status_json_while_running_and_after(hb):
    pidfile = hb.path("pid")
    proc = hb.start("run", "--name", "stat", "--response-timeout", "30",
                    "--", *hb.agent("pidfile:" + pidfile, "cp:page-1", "ready", "sleep:30"))
    wait_for_output(hb, "stat", b"READY")
    child = read_pid(pidfile)

    def running_row():
        row = hb.status("stat")[0]
        return row if row["status"] == "running" and row["checkpoint"] == "page-1" else None

    row = wait_until(running_row, 10, what="status running with checkpoint page-1",
                     seen=lambda: hb.status("stat"))
    assert STATUS_KEYS <= set(row), set(row)
    assert row["name"] == "stat" and row["attempt"] == 1 and row["restarts"] == 0
    assert row["child_pid"] == child and row["supervisor_pid"] == proc.pid, row
    assert row["exit_code"] is None
    assert ISO_UTC.match(row["last_output_at"]) and ISO_UTC.match(row["last_progress_at"]), row
    text = hb.run("status")
    assert text.returncode == 0 and "stat" in text.out and "running" in text.out, text
    proc.send_signal(signal.SIGTERM)
    assert hb.finish(proc).returncode == 143
    row = hb.status("stat")[0]
    assert row["status"] == "stopped" and row["child_pid"] is None and row["supervisor_pid"] is None, row


def test_status_lists_every_job(hb):
    for name in ("one", "two"):
        assert hb.run("run", "--name", name, "--", *hb.agent("exit:0")).returncode == 0
    rows = hb.status()
    assert sorted(r["name"] for r in rows) == ["one", "two"]
    assert all(r["status"] == "succeeded" and r["exit_code"] == 0 for r in rows), rows
    assert all(STATUS_KEYS <= set(r) for r in rows)


def test_default_name_is_stable_for_the_same_command_line(hb):
    cmd = hb.agent("exit:0")
    assert hb.run("run", "--", *cmd).returncode == 0
    assert hb.run("run", "--", *cmd).returncode == 0
    assert len(hb.status()) == 1
    assert hb.run("run", "--", *cmd, "print:different").returncode == 0
    assert len(hb.status()) == 2


def test_events_json_and_tail(hb):
    r = hb.run("run", "--name", "ev", "--", *hb.agent("cp:one", "exit:0"))
    assert r.returncode == 0, r
    ev = hb.events("ev")
    assert names(ev)[0] == "run_start" and names(ev)[-1] == "success", ev
    for e in ev:
        assert {"ts", "job", "run_id", "attempt", "event"} <= set(e), e
        assert ISO_UTC.match(e["ts"]) and e["job"] == "ev", e
    assert ev == hb.event_file("ev")
    tail = hb.run("events", "ev", "--json", "-n", "2")
    assert tail.returncode == 0, tail
    assert [json.loads(line) for line in tail.out.splitlines()] == ev[-2:]
    assert hb.run("events", "ev", "--json", "-n", "0").out == ""
    human = hb.run("events", "ev")
    assert human.returncode == 0
    for name in names(ev):
        assert name in human.out, (name, human.out)
    assert len(human.out.splitlines()) == len(ev)


def test_logs_and_tail(hb):
    r = hb.run("run", "--name", "lg", "--", *hb.agent("numbered:20:0", "err:on stderr"))
    assert r.returncode == 0, r
    full = hb.run("logs", "lg")
    assert full.returncode == 0
    assert full.out == "".join(f"line {i}\n" for i in range(1, 21)) + "on stderr\n", full
    tail = hb.run("logs", "lg", "-n", "3")
    assert tail.out == "line 19\nline 20\non stderr\n", tail


def test_logs_and_events_follow_end_with_the_run(hb):
    proc = hb.start("run", "--name", "fol", "--", *hb.agent("print:first", "ready", "sleep:1", "print:second"))
    wait_for_output(hb, "fol", b"READY")
    logs = hb.start("logs", "fol", "--follow")
    events = hb.start("events", "fol", "--follow", "--json")
    logs, events = hb.finish(logs, timeout=15), hb.finish(events, timeout=15)
    assert hb.finish(proc).returncode == 0
    assert logs.returncode == 0 and events.returncode == 0, (logs, events)
    assert "first" in logs.out and "second" in logs.out, logs
    followed = [json.loads(line)["event"] for line in events.out.splitlines()]
    assert followed[0] == "run_start" and followed[-1] == "success", followed


# --- memory ----------------------------------------------------------------------------------------

def test_huge_single_line_keeps_memory_bounded(hb):
    n = 300_000_000
    proc = hb.start("run", "--name", "longline", "--log-max-size", "1GB", "--", *hb.agent(f"longline:{n}"))
    peaks = {"supervisor": 0, "keeper": 0}
    done = threading.Event()

    def sample():
        keeper_pid = None
        while not done.is_set():
            peaks["supervisor"] = max(peaks["supervisor"], vm_hwm_kib(proc.pid) or 0)
            if keeper_pid is None:
                try:
                    keeper_pid = json.loads((hb.job_dir("longline") / "keeper.json").read_text())["keeper_pid"]
                except (OSError, ValueError, KeyError):
                    pass
            if keeper_pid:
                peaks["keeper"] = max(peaks["keeper"], vm_hwm_kib(keeper_pid) or 0)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    received, bad = 0, 0
    try:
        while True:
            chunk = proc.stdout.read1(1 << 20)
            if not chunk:
                break
            received += len(chunk)
            bad += len(chunk) - chunk.count(b"x")
    finally:
        r = hb.finish(proc, timeout=60)
        done.set()
        sampler.join()
    assert r.returncode == 0, r
    assert received == n + 1 and bad == 1, (received, bad)
    assert peaks["supervisor"] > 0, "the supervisor's VmHWM was never sampled"
    assert peaks["supervisor"] < 100 * 1024, f"supervisor peak RSS {peaks['supervisor']} KiB"
    assert peaks["keeper"] < 100 * 1024, f"keeper peak RSS {peaks['keeper']} KiB"


@pytest.mark.parametrize("pty", [False, True])
def test_the_next_run_of_a_job_says_nothing_more_and_logs_all(hb, pty):
    """A second run of a job reopens its log and index: no warning on stderr (cron would mail it every night)."""
    flags = ["--pty"] if pty else []
    for word in ("first", "second", "third"):
        r = hb.run("run", "--name", "again", *flags, "--", "sh", "-c", f"echo {word}", hb.tag)
        assert r.returncode == 0 and word in r.out and r.err == "", r
    logs = hb.run("logs", "again")
    assert [line.strip() for line in logs.out.splitlines()] == ["first", "second", "third"], logs


def test_output_to_a_socket_as_systemd_gives_a_service(hb):
    """stdout a Unix stream socket (systemd's journal stream): written with MSG_DONTWAIT, all of it arrives."""
    import socket

    ours, theirs = socket.socketpair()
    try:
        proc = hb.start("run", "--name", "sock", "--", "sh", "-c", "seq 1 20000; echo done", hb.tag,
                        stdout=theirs.fileno())
        theirs.close()
        got = bytearray()
        ours.settimeout(30)
        while chunk := ours.recv(65536):
            got += chunk
        assert proc.wait(timeout=30) == 0
    finally:
        ours.close()
    lines = got.decode().split()
    assert lines[:3] == ["1", "2", "3"] and lines[-2:] == ["20000", "done"] and len(lines) == 20001
