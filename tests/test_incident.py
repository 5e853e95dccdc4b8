"""Incidents: snapshots of real process trees (children, groups, sockets, states, secrets, churn), the
text and summary views, the store keeping 20, secret masking rules, stack dumps and output tails."""
from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import stat
import time

import pytest

from conftest import wait_until
from hbwrap import procs
from hbwrap.activity import sample_tree
from hbwrap.argvmask import mask_argv, secret_name
from hbwrap.errors import StateError
from hbwrap.incident import (IncidentStore, make_incident, render_text, snapshot, stack_dump_from,
                             summary_lines, tail_lines)
from proc_helpers import Busy


@pytest.fixture
def busy(tmp_path):
    b = Busy(tmp_path)
    yield b
    b.cleanup()


def snap(roots, **kw):
    return snapshot(roots, now_mono=time.monotonic(), now_wall=time.time(), **kw)


def by_pid(snapshot_: dict) -> dict[int, dict]:
    return {p["pid"]: p for p in snapshot_["processes"]}


# --- real trees --------------------------------------------------------------------------------------

def test_tree_with_a_child_and_an_established_loopback_connection(busy, tmp_path):
    portfile = tmp_path / "port"
    server = busy.start("pair", portfile, "--token=tok-abc123", "--password", "hunter2",
                        "https://bob:pa55word@example.com/feed")
    port = int(portfile.read_text())
    # both asleep in their loops before the snapshot: on a loaded machine it may otherwise catch one at work
    busy.wait_sleeping(server.pid)
    for child in procs.children_of(server.pid):
        busy.wait_sleeping(child)
    result = snap([server.pid], secrets=["https://bob:pa55word@example.com/feed"])
    procs_ = by_pid(result)
    assert server.pid in procs_
    (client_pid,) = [pid for pid, p in procs_.items() if p["ppid"] == server.pid]
    parent, client = procs_[server.pid], procs_[client_pid]
    assert client["depth"] == parent["depth"] + 1 and client["pgid"] == server.pid

    assert parent["sockets_by_state"] == {"tcp ESTABLISHED": 1, "tcp LISTEN": 1}
    assert client["sockets_by_state"] == {"tcp ESTABLISHED": 1}
    (conn,) = client["sockets"]
    assert conn["remote"] == f"127.0.0.1:{port}" and conn["proto"] == "tcp"
    listen = next(s for s in parent["sockets"] if s["state"] == "LISTEN")
    assert listen["local"] == f"127.0.0.1:{port}"

    whole = json.dumps(result)
    for secret in ("tok-abc123", "hunter2", "pa55word", "zzz-secret-key"):
        assert secret not in whole, secret
    assert "--token=***" in parent["argv"] and "API_KEY=***" in client["argv"]
    assert parent["argv"][parent["argv"].index("--password") + 1] == "***"
    for p in (parent, client):
        assert p["state"] == "S" and p["state_word"] == "sleeping" and p["rss_bytes"] > 0
        assert p["age_s"] >= 0 and p["cpu_s"] >= 0 and p["gone"] is False and p["name"].startswith("python")


def test_states_running_stopped_zombie_and_wait_channels(busy):
    burner, sleeper, parent = busy.start("burn"), busy.start("idle"), busy.start("zombie")
    os.kill(sleeper.pid, signal.SIGSTOP)
    wait_until(lambda: by_pid(snap([sleeper.pid]))[sleeper.pid]["state"] == "T", what="the stopped process")
    result = by_pid(snap([burner.pid, sleeper.pid, parent.pid]))
    assert result[burner.pid]["state"] == "R" and result[burner.pid]["state_word"] == "running"
    assert result[sleeper.pid]["state_word"] == "stopped"
    (zombie,) = [p for p in result.values() if p["ppid"] == parent.pid]
    assert zombie["state"] == "Z" and zombie["state_word"] == "zombie"
    assert result[parent.pid]["state"] == "S"
    # a sleeping process names the kernel function it waits in (unless the kernel hides it: "0")
    with open(f"/proc/{parent.pid}/wchan") as f:
        kernel_says = f.read().strip()
    assert result[parent.pid]["wchan"] == (kernel_says if kernel_says not in ("", "0") else None)
    os.kill(sleeper.pid, signal.SIGCONT)


def test_cpu_share_since_the_baseline_and_over_the_lifetime(busy):
    burner, sleeper = busy.start("burn"), busy.start("idle")
    busy.wait_sleeping(sleeper.pid)
    baseline = sample_tree([burner.pid, sleeper.pid])
    wait_until(lambda: sample_tree([burner.pid])["cpu_s"] >= baseline["cpu_s"] + 0.1, what="0.1 s of CPU")
    now = time.monotonic()
    result = snapshot([burner.pid, sleeper.pid], cpu_baseline=baseline, now_mono=now, now_wall=time.time())
    procs_ = by_pid(result)
    assert result["cpu_window_s"] == pytest.approx(now - baseline["mono"], abs=0.1)
    assert procs_[burner.pid]["cpu_share"] > 0.05
    assert procs_[burner.pid]["cpu_share_over_s"] == pytest.approx(now - baseline["mono"], abs=0.1)
    assert procs_[sleeper.pid]["cpu_share"] == 0.0
    lifetime = by_pid(snap([burner.pid]))[burner.pid]  # no baseline: over its lifetime
    assert lifetime["cpu_share_over_s"] == pytest.approx(lifetime["age_s"], abs=0.2)


def test_group_members_outside_the_tree_are_included_and_init_never(busy):
    leader = busy.start("idle")
    joiner = busy.start("idle", process_group=leader.pid)
    assert {leader.pid, joiner.pid} <= set(by_pid(snap([leader.pid])))
    assert snap([1, 0])["processes"] == []


def test_processes_exiting_mid_snapshot_are_tolerated(busy):
    churn = busy.start("churn")
    counts = set()
    for _ in range(40):
        result = snap([churn.pid])
        procs_ = by_pid(result)
        assert churn.pid in procs_ and procs_[churn.pid]["gone"] is False
        for p in result["processes"]:
            assert {"pid", "state", "argv", "sockets", "gone"} <= set(p)
        counts.add(len(result["processes"]))
    assert max(counts) > 1  # children were caught alive (or dying) some of the time


def test_a_root_that_is_gone_gives_an_empty_tree():
    assert snap([2 ** 22 + 12345])["processes"] == []


# --- views -------------------------------------------------------------------------------------------

def incident_for(tree: dict, **kw) -> dict:
    fields = dict(job="demo", run_id="20260101T030000Z-a1b2c3", attempt=2, reason="stall (response)",
                  detail="no sign of life for 5m (--response-timeout 5m)", figures={"silent_s": 300.25},
                  tree=tree, output_tail=["fetching page 3", "retry 7 failed: 429"], checkpoint="page-2",
                  stack_dump="Thread 0x7f (most recent call first):\n  File \"agent.py\", line 9 in fetch")
    fields.update(kw)
    return make_incident(**fields)


def test_render_text_and_summary_of_a_real_tree(busy, tmp_path):
    server = busy.start("pair", tmp_path / "port", "--token=tok-abc123")
    inc = incident_for(snap([server.pid], keeper_pid=None))
    text = render_text(inc)
    lines = text.splitlines()
    assert lines[0] == "incident (unsaved): job demo, run 20260101T030000Z-a1b2c3, attempt 2"
    assert lines[1].startswith("stall (response) at ") and lines[1].endswith("no sign of life for 5m (--response-timeout 5m)")
    assert "silent_s 300.25" in lines[2]
    tree_lines = [line for line in lines if line.lstrip().split(" ")[0].isdigit()]
    assert len(tree_lines) == 2
    # (S sleeping, its usual state; R running when the test catches it at work on a loaded machine)
    assert tree_lines[0].startswith((f"  {server.pid} S sleeping", f"  {server.pid} R running")), tree_lines
    assert tree_lines[1].startswith("    ")  # the child, one level deeper
    assert "tcp ESTABLISHED:1 tcp LISTEN:1" in tree_lines[0] and "--token=***" in tree_lines[0]
    assert "  | retry 7 failed: 429" in lines and "checkpoint: page-2" in lines
    assert "stack dump:" in lines and "tok-abc123" not in text

    summary = summary_lines(inc)
    assert len(summary) == 2
    assert summary[0].startswith("python") and (f"[{server.pid}] S sleeping" in summary[0]
                                                or f"[{server.pid}] R running" in summary[0]), summary
    assert summary[0].endswith("% CPU, tcp ESTABLISHED:1 tcp LISTEN:1")


def fake_proc(pid, depth=0, keeper=False, **kw):
    proc = {"pid": pid, "ppid": 1, "pgid": pid, "depth": depth, "name": f"p{pid}", "state": "S",
            "state_word": "sleeping", "wchan": "do_wait", "cpu_share": 0.123, "rss_bytes": 2_000_000,
            "age_s": 65, "argv": [f"p{pid}", "--x"], "sockets_by_state": {}, "keeper": keeper, "gone": False}
    proc.update(kw)
    return proc


def test_summary_skips_the_keeper_and_caps_the_lines():
    tree = {"processes": [fake_proc(1000, keeper=True)] + [fake_proc(1001 + i, depth=1) for i in range(12)],
            "cpu_window_s": 60}
    summary = summary_lines(incident_for(tree), max_lines=8)
    assert len(summary) == 8 and summary[-1] == "... and 5 more processes"
    assert summary[0] == "p1001[1001] S sleeping, in do_wait, 12.3% CPU"
    text = render_text(incident_for(tree))
    assert "(13 processes; CPU share over the last 1m)" in text and "(keeper)" in text
    assert len(summary_lines(incident_for({"processes": [fake_proc(5)]}), max_lines=8)) == 1
    assert "(no process left)" in render_text(incident_for({"processes": []}))


# --- the store ---------------------------------------------------------------------------------------

def test_store_keeps_the_newest_twenty_with_private_modes(tmp_path):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    store = IncidentStore(job_dir)
    assert store.latest() is None and store.ids() == []
    saved = []
    for attempt in range(1, 26):
        inc = incident_for({"processes": []}, attempt=attempt)
        saved.append(store.save(inc))
        assert inc["id"] == saved[-1] == f"20260101T030000Z-a1b2c3-{attempt}-1"
    assert store.ids() == saved[5:]
    assert store.latest()["attempt"] == 25
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(store.path_of(i)).st_mode) == 0o600 for i in saved[5:])
    assert not os.path.exists(store.path_of(saved[0]))
    assert [n for n in os.listdir(store.dir) if not n.endswith(".json")] == []  # no temporary files left


def test_store_numbers_incidents_of_one_attempt_and_finds_them(tmp_path):
    store = IncidentStore(tmp_path)
    a = store.save(incident_for({"processes": []}, run_id="run-A", attempt=1))
    b = store.save(incident_for({"processes": []}, run_id="run-A", attempt=1))
    c = store.save(incident_for({"processes": []}, run_id="run-B", attempt=3))
    assert (a, b, c) == ("run-A-1-1", "run-A-1-2", "run-B-3-1")
    assert store.find(run_id="run-A")["id"] == b
    assert store.find(attempt=3)["id"] == c
    assert store.find(run_id="run-A", attempt=3) is None
    assert store.load(a)["schema"] == 1 and store.load("run-C-1-1") is None
    # saving again under its id replaces it (e.g. once the stack dump arrived)
    again = store.load(a)
    again["stack_dump"] = "goroutine 1 [running]:"
    assert store.save(again) == a and store.load(a)["stack_dump"] == "goroutine 1 [running]:"
    assert len(store.ids()) == 3


def test_store_rejects_bad_ids_and_skips_damaged_files(tmp_path):
    store = IncidentStore(tmp_path)
    for bad in ("../../etc/passwd", "x", "run-1", "a/b-1-1", ""):
        with pytest.raises(ValueError):
            store.path_of(bad)
    good = store.save(incident_for({"processes": []}, run_id="run-A", attempt=1))
    damaged = Path(store.path_of("run-A-2-1"))
    damaged.write_text("{not json")
    os.utime(damaged, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # the newest
    with pytest.raises(StateError, match="corrupt"):
        store.load("run-A-2-1")
    assert store.latest()["id"] == good
    foreign = Path(store.path_of("run-A-3-1"))
    foreign.write_text('{"schema": 99}')
    with pytest.raises(StateError, match="not an hbwrap incident"):
        store.load("run-A-3-1")


def test_store_tightens_a_loose_directory_and_refuses_a_symlink(tmp_path):
    job_dir = tmp_path / "job"
    (job_dir / "incidents").mkdir(parents=True, mode=0o755)
    os.chmod(job_dir / "incidents", 0o755)
    IncidentStore(job_dir).save(incident_for({"processes": []}))
    assert stat.S_IMODE(os.stat(job_dir / "incidents").st_mode) == 0o700
    other = tmp_path / "other"
    other.mkdir()
    (other / "target").mkdir()
    (other / "incidents").symlink_to(other / "target")
    with pytest.raises(StateError):
        IncidentStore(other).save(incident_for({"processes": []}))


# --- masking, output, stack dumps ------------------------------------------------------------------------

@pytest.mark.parametrize("argv, shown", [
    (["agent", "--token=abc", "--api-key", "k1", "API_KEY=zz", "-p", "pw", "--verbose"],
     ["agent", "--token=***", "--api-key", "***", "API_KEY=***", "-p", "***", "--verbose"]),
    (["git", "clone", "https://bob:secret@example.com/r.git"], ["git", "clone", "https://***@example.com/r.git"]),
    (["curl", "-H", "Authorization: Bearer eyJabc", "https://x.io/?token=q1&page=2"],
     ["curl", "-H", "Authorization: Bearer ***", "https://x.io/?token=***&page=2"]),
    (["sh", "-c", "GITHUB_TOKEN=ghp1 ./run --secret 'a b' --name n"], ["sh", "-c", "GITHUB_TOKEN=*** ./run --secret *** --name n"]),
    (["curl", "-d", '{"password": "pp", "user": "bob"}'], ["curl", "-d", '{"password": "***", "user": "bob"}']),
    (["tool", "--token-file", "/run/t", "--no-password", "db", "--author", "me", "--monkey", "m", "PWD=/x"],
     ["tool", "--token-file", "/run/t", "--no-password", "db", "--author", "me", "--monkey", "m", "PWD=/x"]),
    (["tool", "--password", "--verbose"], ["tool", "--password", "--verbose"]),
])
def test_mask_argv(argv, shown):
    assert mask_argv(argv) == shown


def test_mask_argv_extra_secrets_and_length_bounds():
    assert mask_argv(["post", "https://hooks.example.com/T1/B2/XYZ"], secrets=["https://hooks.example.com/T1/B2/XYZ"]) == \
        ["post", "***"]
    shown = mask_argv(["x" * 5000] + ["y"] * 3000)
    assert len(shown[0]) < 1100 and sum(map(len, shown)) < 4200 and shown[-1].endswith("more arguments)")


@pytest.mark.parametrize("name, secret", [("PASSWORD", True), ("db_passwd", True), ("--client-secret", True),
                                          ("SSH_KEY", True), ("--key", True), ("aws_credentials", True),
                                          ("--cookie", True), ("keyboard", False), ("--keyfile", False),
                                          ("author", False), ("compass", False), ("KEY_FILE", False)])
def test_secret_names(name, secret):
    assert secret_name(name) is secret


def test_tail_lines():
    out = b"".join(b"line %d\n" % i for i in range(80)) + b"bar 10%\rbar 50%\rbar 90%\r\n" + b"x" * 900 + b"\n\xff\xfe"
    tail = tail_lines(out, 50)
    assert len(tail) == 50 and tail[0] == "line 33"  # 83 lines: 80, the bar, the long one, the unended one
    assert tail[-3] == "bar 90%" and tail[-2].endswith("...") and len(tail[-2]) == 503
    assert tail[-1] == "\ufffd\ufffd"
    assert tail_lines(b"") == []


def test_stack_dump_from_output():
    python = (b"working\nThread 0x00007f1 (most recent call first):\n  File \"a.py\", line 3 in main\n")
    assert stack_dump_from(python) == "Thread 0x00007f1 (most recent call first):\n  File \"a.py\", line 3 in main"
    go = b"SIGQUIT: quit\nPC=0x1 m=0\n\ngoroutine 1 [select]:\nmain.main()\n"
    assert stack_dump_from(go).startswith("SIGQUIT: quit")
    assert stack_dump_from(b'Full thread dump OpenJDK 64-Bit Server VM:\n"main" prio=5\n').startswith("Full thread dump")
    assert stack_dump_from(b"just output\n") is None
    big = stack_dump_from(b"Current thread 0x1 (most recent call first):\n" + b"x" * 100_000, max_bytes=1000)
    assert len(big) < 1100 and big.endswith("\n...")


def test_a_process_that_exits_between_the_table_and_its_details_is_marked_gone(busy):
    from hbwrap import proctable
    parent = busy.start("idle")
    doomed = busy.start("idle", process_group=parent.pid)
    table = proctable.proc_table()
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    result = by_pid(snapshot([parent.pid], now_mono=time.monotonic(), now_wall=time.time(), table=table))
    assert result[doomed.pid]["gone"] is True and result[doomed.pid]["sockets"] == []
    assert result[doomed.pid]["argv"] == [f"[{table[doomed.pid].comm}]"]
    assert result[parent.pid]["gone"] is False


def test_a_stored_incident_renders_like_the_fresh_one_and_d_state_reads_as_disk_sleep(busy, tmp_path):
    from hbwrap.incident import process_line
    server = busy.start("pair", tmp_path / "port")
    inc = incident_for(snap([server.pid]))
    (tmp_path / "job").mkdir()
    store = IncidentStore(tmp_path / "job")
    incident_id = store.save(inc)
    assert render_text(store.load(incident_id)) == render_text(inc)
    assert render_text(inc).startswith(f"incident {incident_id}: ")
    stuck = process_line(fake_proc(77, depth=2, state="D", state_word="disk sleep", wchan="nfs_wait_on_request",
                                   sockets_by_state={"tcp CLOSE_WAIT": 2}))
    assert stuck.startswith("    77 D disk sleep  wchan nfs_wait_on_request  cpu 12.3%  rss 2.0 MB  age 1m05s")
    assert "sockets tcp CLOSE_WAIT:2  p77 --x" in stuck
