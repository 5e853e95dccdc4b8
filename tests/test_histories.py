"""The real supervisor loop and policy, driven through tables of histories in fake time (tests/fakes.py):
what each attempt's command does goes in, the events and the exit code come out, in milliseconds."""
import signal

import pytest

from fakes import World, events, supervise

TERM, KILL = int(signal.SIGTERM), int(signal.SIGKILL)

# (id, options, attempts' scripts, run-wide events, expected event names, expected exit code)
HISTORIES = [
    ("clean exit", {}, {1: [("out", b"hello\n"), ("at", 0.2, ("exit", 0))]}, [],
     ["run_start", "attempt_start", "exit", "success"], 0),
    ("failure is not retried by default", {}, {1: [("at", 0.1, ("exit", 3))]}, [],
     ["run_start", "attempt_start", "exit", "failure"], 3),
    ("on-failure retries, then success", {"restart": "on-failure", "backoff_s": 0.1},
     {1: [("at", 0.1, ("exit", 3))], 2: [("at", 0.1, ("exit", 0))]}, [],
     ["run_start", "attempt_start", "exit", "restart", "attempt_start", "exit", "success"], 0),
    ("response stall, restart from the checkpoint", {"response_timeout_s": 1.0, "grace_s": 0.5, "backoff_s": 0.1},
     {1: [("out", b"checkpoint: a\n")], 2: [("at", 0.1, ("exit", 0))]}, [],
     ["run_start", "attempt_start", "checkpoint", "stall", "kill", "exit", "restart", "attempt_start", "exit",
      "success"], 0),
    ("a TERM-ignoring command gets SIGKILL after the grace",
     {"response_timeout_s": 0.5, "grace_s": 0.4, "restart": "never"}, {1: [("ignore_term",)]}, [],
     ["run_start", "attempt_start", "stall", "kill", "kill", "exit", "escalate"], 124),
    ("timeout of an attempt that keeps printing", {"timeout_s": 1.0, "restart": "never"},
     {1: [("out", b"x\n"), ("at", 0.5, ("out", b"y\n")), ("at", 0.9, ("out", b"z\n"))]}, [],
     ["run_start", "attempt_start", "stall", "kill", "exit", "escalate"], 124),
    ("restarts are bounded", {"response_timeout_s": 0.3, "grace_s": 0.1, "backoff_s": 0.05, "max_restarts": 1},
     {}, [],
     ["run_start", "attempt_start", "stall", "kill", "exit", "restart", "attempt_start", "stall", "kill", "exit",
      "escalate"], 124),
    ("the deadline passes during back-off", {"response_timeout_s": 0.5, "grace_s": 0.1, "backoff_s": 5.0,
                                             "backoff_max_s": 5.0, "deadline_s": 1.5}, {}, [],
     ["run_start", "attempt_start", "stall", "kill", "exit", "restart", "stall", "escalate"], 124),
    ("a signal stops the run", {}, {1: [("out", b"working\n")]}, [(0.5, ("signal", TERM))],
     ["run_start", "attempt_start", "kill", "exit", "stop"], 128 + TERM),
    ("a second signal kills at once", {"grace_s": 30.0}, {1: [("ignore_term",)]},
     [(0.5, ("signal", TERM)), (0.7, ("signal", TERM))],
     ["run_start", "attempt_start", "kill", "kill", "exit", "stop"], 128 + TERM),
    ("a signal during back-off", {"response_timeout_s": 0.3, "grace_s": 0.1, "backoff_s": 10.0,
                                  "backoff_max_s": 10.0}, {}, [(2.0, ("signal", TERM))],
     ["run_start", "attempt_start", "stall", "kill", "exit", "restart", "stop"], 128 + TERM),
    ("probe failures are a stall", {"probe": "fail", "probe_interval_s": 0.2, "probe_failures": 2,
                                    "grace_s": 0.1, "restart": "never"}, {}, [],
     ["run_start", "attempt_start", "stall", "kill", "exit", "escalate"], 124),
    ("a passing probe is not a sign of life", {"probe": "pass", "probe_interval_s": 0.1, "response_timeout_s": 1.0,
                                               "grace_s": 0.1, "restart": "never"}, {}, [],
     ["run_start", "attempt_start", "stall", "kill", "exit", "escalate"], 124),
    ("command not found", {}, {1: [("exec", 127, "No such file or directory")]}, [],
     ["run_start", "exit", "escalate"], 127),
    ("a fatal line makes a stall final", {"response_timeout_s": 0.5, "grace_s": 0.1,
                                          "fatal_patterns": ("suspended",)},
     {1: [("out", b"account suspended\n")]}, [],
     ["run_start", "attempt_start", "stall", "kill", "exit", "escalate"], 124),
    ("heartbeats keep a silent command alive", {"response_timeout_s": 0.5},
     {1: [("at", 0.3, ("beat",)), ("at", 0.6, ("beat",)), ("at", 0.9, ("beat",)), ("at", 1.1, ("exit", 0))]}, [],
     ["run_start", "attempt_start", "exit", "success"], 0),
    ("a lost keeper is retried as a stall", {"grace_s": 0.2, "backoff_s": 0.1},
     {1: [("out", b"checkpoint: c1\n"), ("at", 0.3, ("keeper_dies",))], 2: [("at", 0.1, ("exit", 0))]}, [],
     ["run_start", "attempt_start", "checkpoint", "kill", "exit", "restart", "attempt_start", "exit", "success"], 0),
    ("a lost keeper with --restart never ends 125", {"grace_s": 0.2, "restart": "never"},
     {1: [("at", 0.3, ("keeper_dies",))]}, [],
     ["run_start", "attempt_start", "kill", "exit", "escalate"], 125),
]

# restarts that wait for a gate (--restart-approval, --restart-check): attempt 1 stalls at 0.5 s, its exit at
# 0.53 s is the decision; attempt 2 succeeds
STALLS = {"response_timeout_s": 0.5, "grace_s": 0.1, "backoff_s": 0.1}
TWO = {1: [("out", b"checkpoint: a\n")], 2: [("at", 0.1, ("exit", 0))]}
UNTIL_EXIT = ["run_start", "attempt_start", "checkpoint", "stall", "kill", "exit"]
AGAIN = ["attempt_start", "exit", "success"]
GATED = [
    ("approve restarts", {**STALLS, "restart_approval_s": 60.0}, TWO, [(5.0, ("answer", "approve"))],
     UNTIL_EXIT + ["restart_pending", "approved", "restart"] + AGAIN, 0),
    ("deny escalates", {**STALLS, "restart_approval_s": 60.0}, TWO, [(5.0, ("answer", "deny"))],
     UNTIL_EXIT + ["restart_pending", "denied", "escalate"], 124),
    ("no answer: abort", {**STALLS, "restart_approval_s": 3.0}, TWO, [],
     UNTIL_EXIT + ["restart_pending", "escalate"], 124),
    ("no answer: restart", {**STALLS, "restart_approval_s": 3.0, "approval_default": "restart"}, TWO, [],
     UNTIL_EXIT + ["restart_pending", "restart"] + AGAIN, 0),
    ("a failure denied keeps its exit code", {"restart": "on-failure", "restart_approval_s": 60.0},
     {1: [("at", 0.1, ("exit", 3))]}, [(1.0, ("answer", "deny"))],
     ["run_start", "attempt_start", "exit", "restart_pending", "denied", "escalate"], 3),
    ("check passes", {**STALLS, "restart_check": "pass"}, TWO, [],
     UNTIL_EXIT + ["restart", "restart_check"] + AGAIN, 0),
    ("check fails", {**STALLS, "restart_check": "fail"}, TWO, [],
     UNTIL_EXIT + ["restart", "restart_check", "escalate"], 124),
    ("check runs past 60 s", {**STALLS, "restart_check": "hang"}, TWO, [],
     UNTIL_EXIT + ["restart", "restart_check", "escalate"], 124),
    ("approval, then the check", {**STALLS, "restart_approval_s": 60.0, "restart_check": "pass:1"}, TWO,
     [(5.0, ("answer", "approve"))], UNTIL_EXIT + ["restart_pending", "approved", "restart", "restart_check"] + AGAIN,
     0),
    ("approved, then the check fails", {**STALLS, "restart_approval_s": 60.0, "restart_check": "fail"}, TWO,
     [(5.0, ("answer", "approve"))], UNTIL_EXIT + ["restart_pending", "approved", "restart", "restart_check",
                                                   "escalate"], 124),
    ("the deadline passes while waiting for approval", {**STALLS, "restart_approval_s": 60.0, "deadline_s": 4.0},
     TWO, [], UNTIL_EXIT + ["restart_pending", "stall", "escalate"], 124),
    ("the deadline passes while the check runs", {**STALLS, "restart_check": "hang", "deadline_s": 10.0}, TWO, [],
     UNTIL_EXIT + ["restart", "stall", "escalate"], 124),
    ("a signal while waiting for approval", {**STALLS, "restart_approval_s": 60.0}, TWO,
     [(3.0, ("signal", TERM))], UNTIL_EXIT + ["restart_pending", "stop"], 128 + TERM),
    ("a signal while the check runs", {**STALLS, "restart_check": "hang"}, TWO,
     [(3.0, ("signal", TERM))], UNTIL_EXIT + ["restart", "stop"], 128 + TERM),
]
HISTORIES += GATED


@pytest.mark.parametrize("opts, attempts, at, expected, code", [h[1:] for h in HISTORIES],
                         ids=[h[0] for h in HISTORIES])
def test_history(tmp_path, opts, attempts, at, expected, code):
    if "restart" in opts:
        from hbwrap.model import RestartMode
        opts = {**opts, "restart": RestartMode(opts["restart"])}
    got, world = supervise(tmp_path, opts, attempts, at)
    names = [e["event"] for e in events(tmp_path)]
    assert names == expected, names
    assert got == code


def test_the_restart_resumes_from_the_checkpoint_and_the_stall_says_why(tmp_path):
    supervise(tmp_path, {"response_timeout_s": 1.0, "grace_s": 0.5, "backoff_s": 0.1},
              {1: [("out", b"checkpoint: a\n")], 2: [("at", 0.1, ("exit", 0))]})
    ev = events(tmp_path)
    stall = next(e for e in ev if e["event"] == "stall")
    assert stall["reason"] == "response" and stall["detail"].startswith("no sign of life for 1s"), stall
    starts = [e for e in ev if e["event"] == "attempt_start"]
    assert "resume_from" not in starts[0] and starts[1]["resume_from"] == "a", starts


def test_deadlines_are_kept_to_the_millisecond_in_fake_time(tmp_path):
    _, world = supervise(tmp_path, {"response_timeout_s": 2.0, "grace_s": 0.3, "restart": _never()},
                         {1: [("out", b"x\n")]})
    ev = events(tmp_path)
    t0 = next(e for e in ev if e["event"] == "attempt_start")["ts"]
    stall = next(e for e in ev if e["event"] == "stall")["ts"]
    from hbwrap.model import parse_iso
    assert 2.0 <= parse_iso(stall) - parse_iso(t0) < 2.01


def test_probe_stall_detail_says_the_probe_failed(tmp_path):
    supervise(tmp_path, {"probe": "fail", "probe_interval_s": 0.2, "probe_failures": 2, "grace_s": 0.1,
                         "restart": _never()}, {})
    stall = next(e for e in events(tmp_path) if e["event"] == "stall")
    assert stall["reason"] == "probe" and "exited with code 1" in stall["detail"], stall


def _never():
    from hbwrap.model import RestartMode
    return RestartMode.NEVER


# --- takeover and self-heal: the supervisor dies, another one adopts the run from its files ----------

def test_self_heal_during_backoff_restarts_on_schedule(tmp_path):
    opts = {"response_timeout_s": 0.5, "grace_s": 0.1, "backoff_s": 4.0, "backoff_max_s": 4.0}
    attempts = {1: [("out", b"checkpoint: s1\n")], 2: [("at", 0.1, ("exit", 0))]}
    code, world = supervise(tmp_path, opts, attempts, [(1.5, ("kill_supervisor",))])
    assert code == "killed"
    restart = next(e for e in events(tmp_path) if e["event"] == "restart")
    world.clock.now = 2.0  # the keeper's replacement starts half a second later
    code, world = supervise(tmp_path, opts, attempts, by="keeper", world=world, takeover_only=True)
    assert code == 0
    ev = events(tmp_path)
    names = [e["event"] for e in ev]
    assert names[names.index("restart"):] == ["restart", "takeover", "attempt_start", "exit", "success"], names
    takeover = next(e for e in ev if e["event"] == "takeover")
    assert takeover["by"] == "keeper" and takeover["detail"] == "the run was waiting to restart"
    from hbwrap.model import parse_iso
    second = [e for e in ev if e["event"] == "attempt_start"][1]
    assert second["resume_from"] == "s1"
    planned = parse_iso(restart["ts"]) + restart["delay_s"]
    assert abs(parse_iso(second["ts"]) - planned) < 0.1, (second["ts"], planned)
    import json
    state = json.loads((tmp_path / "state" / "job" / "state.json").read_text())
    assert state["heals"] == 1 and state["status"] == "succeeded"


def test_takeover_decides_from_output_written_while_nobody_read(tmp_path):
    from hbwrap.model import RestartMode
    opts = {"restart": RestartMode.ON_FAILURE, "fatal_patterns": ("suspended",), "backoff_s": 0.1}
    attempts = {1: [("out", b"checkpoint: x\n"), ("at", 0.5, ("out", b"account suspended\ncheckpoint: y\n")),
                    ("at", 0.8, ("exit", 1))]}
    code, world = supervise(tmp_path, opts, attempts, [(0.3, ("kill_supervisor",))])
    assert code == "killed"
    world.clock.now = 1.0
    world._run_due()  # what the command did while no supervisor was there
    code, _ = supervise(tmp_path, opts, attempts, by="watch", world=world, takeover_only=True)
    ev = events(tmp_path)
    names = [e["event"] for e in ev]
    assert names == ["run_start", "attempt_start", "checkpoint", "takeover", "checkpoint", "exit", "escalate"], names
    assert code == 1 and ev[-1]["reason"] == "fatal", ev[-1]
    assert ev[-1]["checkpoint"] == "y"
    assert world.launches == 1, "a fatal failure must not be retried"


def test_takeover_while_the_kill_is_in_its_grace_finishes_it(tmp_path):
    opts = {"response_timeout_s": 0.5, "grace_s": 2.0, "backoff_s": 0.1}
    attempts = {1: [("ignore_term",)], 2: [("at", 0.1, ("exit", 0))]}
    code, world = supervise(tmp_path, opts, attempts, [(1.0, ("kill_supervisor",))])
    assert code == "killed"
    world.clock.now = 1.5
    code, _ = supervise(tmp_path, opts, attempts, by="keeper", world=world, takeover_only=True)
    names = [e["event"] for e in events(tmp_path)]
    assert names == ["run_start", "attempt_start", "stall", "kill", "takeover", "kill", "exit", "restart",
                     "attempt_start", "exit", "success"], names
    assert code == 0


def test_a_second_takeover_counts_heals(tmp_path):
    opts = {"response_timeout_s": 30.0}
    attempts = {1: [("out", b"x\n"), ("at", 3.0, ("exit", 0))]}
    code, world = supervise(tmp_path, opts, attempts, [(0.5, ("kill_supervisor",))])
    world.at = [(1.5, ("kill_supervisor",))]
    world.clock.now = 1.0
    assert supervise(tmp_path, opts, attempts, by="keeper", world=world, takeover_only=True)[0] == "killed"
    world.clock.now = 2.0
    code, _ = supervise(tmp_path, opts, attempts, by="keeper", world=world, takeover_only=True)
    assert code == 0
    import json
    state = json.loads((tmp_path / "state" / "job" / "state.json").read_text())
    assert state["heals"] == 2 and state["generation"] == 3
    assert [e["by"] for e in events(tmp_path) if e["event"] == "takeover"] == ["keeper", "keeper"]


def test_world_sanity(tmp_path):
    world = World(tmp_path, {})
    assert world.wait([], 1.5) == set() and world.clock.now == 1.5


def test_a_superseded_supervisor_that_wakes_up_steps_down_without_acting(tmp_path):
    # stopped past its lease while the response deadline passed; meanwhile another supervisor took over
    code, world = supervise(tmp_path, {"response_timeout_s": 1.0, "lease_s": 3.0},
                            {1: [("out", b"x\n")]}, [(0.5, ("superseded", 10.0))])
    assert code == 75
    assert [e["event"] for e in events(tmp_path)] == ["run_start", "attempt_start"]
    handle = world.handles[1]
    assert handle.command and not handle.events, "the command must not have been signalled"
    import json
    assert json.loads((tmp_path / "state" / "job" / "state.json").read_text())["supervisor_pid"] == 1


# --- incidents, activity, repetition, stack dumps, retry-after (issue 14) -----------------------------

def every(dt: float, until: float, action: tuple) -> list:
    return [("at", round(k * dt, 6), action) for k in range(1, int(until / dt) + 1)]


def test_a_stall_records_an_incident_before_any_signal_and_the_event_names_it(tmp_path):
    supervise(tmp_path, {"response_timeout_s": 0.5, "grace_s": 0.1, "restart": _never()}, {1: [("out", b"x\n")]})
    ev = events(tmp_path)
    stall = next(e for e in ev if e["event"] == "stall")
    assert stall["incident"].endswith("-1-1") and stall["incident_path"].endswith(stall["incident"] + ".json")
    assert stall["incident_summary"], stall
    import json
    inc = json.loads(open(stall["incident_path"]).read())
    assert inc["reason"] == "response" and inc["figures"]["limit_s"] == 0.5 and inc["output_tail"] == ["x"]
    assert [e["event"] for e in ev].index("stall") < [e["event"] for e in ev].index("kill")


def test_activity_cpu_keeps_a_silent_busy_command_alive(tmp_path):
    code, _ = supervise(tmp_path, {"response_timeout_s": 1.0, "activity": ("cpu",), "grace_s": 0.1},
                        {1: [("busy", 0.5), ("at", 3.5, ("exit", 0))]})
    assert code == 0
    assert "stall" not in [e["event"] for e in events(tmp_path)]


def test_activity_does_not_save_an_idle_silent_command_and_says_what_it_measured(tmp_path):
    code, _ = supervise(tmp_path, {"response_timeout_s": 1.0, "activity": ("cpu", "io"), "grace_s": 0.1,
                                   "restart": _never()}, {1: [("out", b"started\n")]})
    assert code == 124
    stall = next(e for e in events(tmp_path) if e["event"] == "stall")
    assert stall["detail"].startswith("no output and 0.0% CPU, 0 bytes I/O over 1s"), stall


def test_activity_io_counts_writes(tmp_path):
    code, _ = supervise(tmp_path, {"response_timeout_s": 1.0, "activity": ("io",), "grace_s": 0.1},
                        {1: every(0.4, 2.8, ("io", 4096)) + [("at", 3.0, ("exit", 0))]})
    assert code == 0 and "stall" not in [e["event"] for e in events(tmp_path)]


def test_output_that_only_repeats_itself_is_a_repeat_stall(tmp_path):
    loop = [("at", 0.1 * k, ("out", b"retry %d failed: HTTP 429 id=%08x\n" % (k, 0xdead0000 + k)))
            for k in range(1, 60)]
    code, _ = supervise(tmp_path, {"response_timeout_s": 10.0, "repeat_timeout_s": 2.0, "grace_s": 0.1,
                                   "restart": _never()}, {1: [("out", b"starting\n"), *loop]})
    assert code == 124
    stall = next(e for e in events(tmp_path) if e["event"] == "stall")
    assert stall["reason"] == "repeat" and "only repeats itself" in stall["detail"], stall


def test_output_with_new_lines_is_never_a_repeat_stall(tmp_path):
    words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel"]
    lines = [("at", 0.3 * k, ("out", b"page %s %s done\n" % (words[k % 8], words[k // 8]))) for k in range(1, 20)]
    code, _ = supervise(tmp_path, {"repeat_timeout_s": 1.0}, {1: [*lines, ("at", 6.0, ("exit", 0))]})
    assert code == 0 and "stall" not in [e["event"] for e in events(tmp_path)]


def test_dump_signal_goes_first_and_the_kill_waits_for_the_dump(tmp_path):
    opts = {"response_timeout_s": 0.5, "grace_s": 0.2, "restart": _never(), "dump_signal": 10, "dump_wait_s": 1.0}
    dump = b"Current thread 0x0001 (most recent call first):\n  File \"agent.py\", line 3 in wait\n"
    code, world = supervise(tmp_path, opts, {1: [("dumps", dump), ("out", b"x\n")]})
    assert code == 124 and world.handles[1].dumps == [10]
    ev = events(tmp_path)
    kills = [(e["signal"], e.get("reason")) for e in ev if e["event"] == "kill"]
    assert kills[:2] == [("SIGUSR1", "dump"), ("SIGTERM", "response")], kills
    from hbwrap.model import parse_iso
    t = {e.get("reason"): parse_iso(e["ts"]) for e in ev if e["event"] == "kill"}
    assert 1.0 <= t["response"] - t["dump"] < 1.01
    import json
    inc = json.loads(open(next(e for e in ev if e["event"] == "stall")["incident_path"]).read())
    assert inc["stack_dump"].startswith("Current thread 0x0001"), inc


def test_retry_after_sets_the_restart_delay(tmp_path):
    from hbwrap.model import RestartMode
    code, _ = supervise(tmp_path, {"restart": RestartMode.ON_FAILURE, "backoff_s": 0.1},
                        {1: [("out", b"retry-after: 3s\n"), ("at", 0.1, ("exit", 1))], 2: [("at", 0.1, ("exit", 0))]})
    assert code == 0
    restart = next(e for e in events(tmp_path) if e["event"] == "restart")
    assert restart["reason"] == "retry-after" and restart["delay_s"] == 3.0, restart


def test_retry_after_past_the_deadline_escalates_at_once(tmp_path):
    from hbwrap.model import RestartMode
    code, world = supervise(tmp_path, {"restart": RestartMode.ON_FAILURE, "deadline_s": 10.0},
                            {1: [("out", b"retry-after: 15m\n"), ("at", 0.1, ("exit", 1))]})
    assert code == 124 and world.launches == 1
    ev = events(tmp_path)
    assert ev[-1]["event"] == "escalate" and ev[-1]["reason"] == "deadline", ev[-1]
    from hbwrap.model import parse_iso
    assert parse_iso(ev[-1]["ts"]) - parse_iso(ev[0]["ts"]) < 1.0, "at once, not at the deadline"


# --- the gates in detail: figures, reasons, and takeovers while a restart waits -------------------------

def _ts(event) -> float:
    from hbwrap.model import parse_iso
    return parse_iso(event["ts"])


def _one(ev, name):
    found = [e for e in ev if e["event"] == name]
    assert len(found) == 1, (name, [e["event"] for e in ev])
    return found[0]


def _state(tmp_path) -> dict:
    import json
    return json.loads((tmp_path / "state" / "job" / "state.json").read_text())


@pytest.mark.parametrize("opts, at, reason", [
    ({"restart_approval_s": 60.0}, [(5.0, ("answer", "deny", "bob@phone"))], "denied"),
    ({"restart_approval_s": 3.0}, [], "no approval"),
    ({"restart_check": "fail"}, [], "unsafe"),
    ({"restart_check": "hang"}, [], "unsafe"),
])
def test_a_refused_restart_escalates_with_its_reason_and_the_stall(tmp_path, opts, at, reason):
    code, _ = supervise(tmp_path, {**STALLS, **opts}, TWO, at)
    escalate = events(tmp_path)[-1]
    assert escalate["event"] == "escalate" and escalate["reason"] == reason, escalate
    assert escalate["stall"] == "response" and escalate["exit_code"] == code == 124
    assert escalate["restarts"] == (1 if "restart_check" in opts else 0), escalate  # announced, or never made
    assert _state(tmp_path)["status"] == "escalated"


def test_restart_pending_says_the_window_the_deadline_the_host_and_what_to_run(tmp_path):
    supervise(tmp_path, {**STALLS, "restart_approval_s": 1800.0, "host": "web-1"}, TWO,
              [(10.0, ("answer", "approve", "bob@phone"))])
    ev = events(tmp_path)
    pending, approved, restart = _one(ev, "restart_pending"), _one(ev, "approved"), _one(ev, "restart")
    exit_ = next(e for e in ev if e["event"] == "exit")
    from hbwrap.model import parse_iso
    assert pending["delay_s"] == 1800.0 and pending["host"] == "web-1" and pending["approval_default"] == "abort"
    assert abs(parse_iso(pending["approve_by"]) - _ts(exit_) - 1800.0) < 0.01, pending
    assert pending["reason"] == "stall" and pending["restarts"] == 1 and pending["resume_from"] == "a"
    assert pending["detail"] == "the attempt stalled (response)" and pending["attempt"] == 1
    assert approved["by"] == "bob@phone" and approved["attempt"] == 1
    assert restart["approved_by"] == "bob@phone" and restart["delay_s"] == 0.0 and restart["attempt"] == 1
    second = [e for e in ev if e["event"] == "attempt_start"][1]
    assert second["resume_from"] == "a" and _ts(second) - _ts(approved) < 0.05, "approve restarts at once"
    out = (tmp_path / "passthrough.out").read_text()
    assert "run `hbwrap approve job` to restart now or `hbwrap deny job` to give up" in out, out


def test_an_approval_within_the_back_off_waits_for_the_rest_of_it(tmp_path):
    opts = {"response_timeout_s": 0.5, "grace_s": 0.1, "backoff_s": 4.0, "backoff_max_s": 4.0,
            "restart_approval_s": 60.0}
    supervise(tmp_path, opts, TWO, [(1.0, ("answer", "approve"))])
    ev = events(tmp_path)
    exit_, approved, restart = next(e for e in ev if e["event"] == "exit"), _one(ev, "approved"), _one(ev, "restart")
    second = [e for e in ev if e["event"] == "attempt_start"][1]
    backoff_s = _ts(second) - _ts(exit_)        # the back-off counts from the decision, not from the answer
    assert 2.0 <= backoff_s <= 4.05, backoff_s
    assert abs(_ts(restart) + restart["delay_s"] - _ts(second)) < 0.05, (restart, second)
    assert restart["delay_s"] > 0.5 and _ts(approved) < _ts(second)


def test_the_check_gets_the_alert_environment_and_the_checkpoint_to_resume_from(tmp_path):
    _, world = supervise(tmp_path, {**STALLS, "restart_check": "pass"}, TWO)
    env = world.checks[0].env
    assert env["HBWRAP_RESUME_FROM"] == "a" and env["HBWRAP_CHECKPOINT"] == "a"
    assert env["HBWRAP_EVENT"] == "restart_check" and env["HBWRAP_JOB"] == "job"
    assert env["HBWRAP_ATTEMPT"] == "1" and env["HBWRAP_REASON"] == "stall" and env["HBWRAP_EXIT_CODE"] == "124"
    assert env["PATH"] == "/usr/bin:/bin"
    check = _one(events(tmp_path), "restart_check")
    assert check["passed"] is True and check["exit_code"] == 0 and check["output"] == "pass said so", check


def test_a_check_past_60s_is_killed_and_says_so(tmp_path):
    supervise(tmp_path, {**STALLS, "restart_check": "hang"}, TWO)
    ev = events(tmp_path)
    check, restart = _one(ev, "restart_check"), _one(ev, "restart")
    assert check["passed"] is False and check["timed_out"] is True, check
    assert 60.0 <= _ts(check) - _ts(restart) - restart["delay_s"] < 60.1, "killed at its 60 s limit"
    assert "ran longer than 60s" in check["detail"]


def test_the_deadline_cuts_the_approval_window_and_ends_the_wait_with_124(tmp_path):
    supervise(tmp_path, {**STALLS, "restart_approval_s": 60.0, "deadline_s": 4.0}, TWO)
    ev = events(tmp_path)
    pending, stall, escalate = _one(ev, "restart_pending"), ev[-2], ev[-1]
    assert pending["delay_s"] < 3.6, "nobody can approve past the run's --deadline"
    assert stall["event"] == "stall" and stall["reason"] == "deadline" and "approval" in stall["detail"], stall
    assert escalate["reason"] == "deadline" and 4.0 <= _ts(escalate) - _ts(ev[0]) < 4.01, escalate


def test_an_answer_for_another_attempt_is_ignored_and_removed(tmp_path):
    import json
    job_dir = tmp_path / "state" / "job"
    world = World(job_dir, TWO, [])
    job_dir.mkdir(parents=True, mode=0o700)
    world.at = [(2.0, ("answer", "approve"))]
    # the real answer, then rewritten to name another run: as if left over from an earlier one
    original = world.answer

    def stale(verdict, by="alice@laptop"):
        original(verdict, by)
        doc = json.loads((job_dir / "approval.json").read_text())
        (job_dir / "approval.json").write_text(json.dumps({**doc, "run_id": "another-run"}))

    world.answer = stale
    code, _ = supervise(tmp_path, {**STALLS, "restart_approval_s": 3.0}, TWO, world=world)
    assert code == 124 and events(tmp_path)[-1]["reason"] == "no approval"
    assert not (job_dir / "approval.json").exists()
    assert "ignored an answer" in (tmp_path / "passthrough.out").read_text()


def test_takeover_while_waiting_for_approval_keeps_the_window_and_takes_the_answer(tmp_path):
    opts = {**STALLS, "restart_approval_s": 60.0}
    code, world = supervise(tmp_path, opts, TWO, [(2.0, ("kill_supervisor",))])
    assert code == "killed"
    state = _state(tmp_path)
    assert state["status"] == "awaiting-approval" and state["next_deadline"] == "approval", state
    assert state["approval_until"] == state["next_deadline_at"]
    world.clock.now = 2.5                      # the keeper's replacement; an answer comes meanwhile
    world.answer("approve", "carol@desk")
    code, world = supervise(tmp_path, opts, TWO, by="keeper", world=world, takeover_only=True)
    assert code == 0
    ev = events(tmp_path)
    names = [e["event"] for e in ev]
    assert names[names.index("restart_pending"):] == ["restart_pending", "takeover", "approved", "restart"] + AGAIN
    assert _one(ev, "takeover")["detail"] == "the run's restart was waiting for approval"
    assert _one(ev, "approved")["by"] == "carol@desk"
    assert _state(tmp_path)["approval_until"] is None


def test_takeover_while_waiting_for_approval_keeps_its_deadline_counting(tmp_path):
    opts = {**STALLS, "restart_approval_s": 5.0}
    code, world = supervise(tmp_path, opts, TWO, [(2.0, ("kill_supervisor",))])
    world.clock.now = 3.0
    code, _ = supervise(tmp_path, opts, TWO, by="watch", world=world, takeover_only=True)
    ev = events(tmp_path)
    assert code == 124 and ev[-1]["reason"] == "no approval", ev[-1]
    assert abs(_ts(ev[-1]) - _ts(_one(ev, "restart_pending")) - 5.0) < 0.11, "the window did not restart"


def test_takeover_while_the_check_runs_runs_it_again(tmp_path):
    opts = {**STALLS, "restart_check": "pass:5"}
    code, world = supervise(tmp_path, opts, TWO, [(2.0, ("kill_supervisor",))])
    assert code == "killed" and len(world.checks) == 1
    state = _state(tmp_path)
    assert state["status"] == "backoff" and state["next_deadline"] == "restart-check" and state["check_pid"]
    world.clock.now = 2.5
    code, world = supervise(tmp_path, opts, TWO, by="keeper", world=world, takeover_only=True)
    assert code == 0 and len(world.checks) == 2, "the new supervisor asks the check again"
    names = [e["event"] for e in events(tmp_path)]
    assert names[names.index("restart"):] == ["restart", "takeover", "restart_check"] + AGAIN, names


def test_a_held_back_checkpoint_is_recorded_before_the_exit_and_escalate_that_follow_it(tmp_path):
    # checkpoint events are spaced (CHECKPOINT_EVENT_SPACING_S): "b", printed while the command winds down
    # after its SIGTERM, is held back when it exits a moment later; it must come before exit and escalate
    supervise(tmp_path, {"deadline_s": 1.0, "grace_s": 0.5, "restart": _never()},
              {1: [("ignore_term",), ("at", 1.2, ("out", b"checkpoint: a\n")), ("at", 1.21, ("out", b"checkpoint: b\n")),
                   ("at", 1.22, ("exit", 0))]})
    names = [(e["event"], e.get("checkpoint")) for e in events(tmp_path)]
    assert names[-1][0] == "escalate", names
    exit_at = next(i for i, (name, _) in enumerate(names) if name == "exit")
    assert ("checkpoint", "b") in names[:exit_at], names
