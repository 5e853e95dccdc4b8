"""The modules `hbwrap run` imports, and what they do on a run, leave out the stdlib modules they do not need
(#16: start-up time and memory per supervised job). Each check runs in a fresh interpreter."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

# what the run path no longer imports: dataclasses (and inspect, ast, dis, tokenize with it; copy), typing,
# datetime, ctypes and pwd. hbwrap.record, collections.namedtuple, time and os.uname do their work.
LEFT_OUT = ("dataclasses", "inspect", "ast", "dis", "tokenize", "copy", "typing", "datetime", "ctypes", "pwd")
RUN_PATH = ("hbwrap.entry", "hbwrap.runargs", "hbwrap.config_merge", "hbwrap.policy", "hbwrap.model",
            "hbwrap.options", "hbwrap.procs", "hbwrap.approval", "hbwrap.activity", "hbwrap.record")

# a run's use of these modules: options built and stored, the record written and read back, one decision
EXERCISE = """
import random
from hbwrap import policy
from hbwrap.model import AttemptEnd, RunRecord, iso, parse_iso
from hbwrap.options import RunOptions, build_run_options
from hbwrap.record import replace
opts = build_run_options(command=["sleep", "1"], name="lean", state_dir="/tmp/lean-imports",
                         response_timeout="5s", restart="on-failure")
again = RunOptions.from_json(json.loads(json.dumps(opts.to_json())))
assert again == opts and replace(opts, quiet=True).quiet
rec = RunRecord(name="lean", run_id="r1", started_at=100.0, attempt_started_at=100.0, command=["sleep", "1"],
                options=opts.to_json())
doc = json.loads(json.dumps(rec.to_doc(1.7e9)))
assert RunRecord.from_doc(doc, 1.7e9).started_at == 100.0 and parse_iso(iso(1.7e9)) == 1.7e9
st = policy.RunState(rec)
actions = policy.advance(st, policy.Observations(), 100.0, opts, random.Random(1))
assert actions and policy.decide(opts, AttemptEnd(exit_code=1), 0, 101.0, 100.0, random.Random(1)).kind.value
"""


def _modules(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nsys.stdout.write(json.dumps(sorted(sys.modules)))\n"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout))


def _bare() -> set[str]:
    """What this venv's interpreter has imported before any hbwrap code (site, the editable finder)."""
    return _modules("pass")


def test_the_run_path_modules_import_none_of_the_left_out_ones():
    added = _modules("import " + ", ".join(RUN_PATH)) - _bare()
    assert set(RUN_PATH) <= added
    assert sorted(m for m in added if m.split(".")[0] in LEFT_OUT) == []


def test_a_run_through_the_policy_imports_none_of_them_either():
    added = _modules("import json\n" + EXERCISE) - _bare()
    assert "hbwrap.policy.machine" in added
    assert sorted(m for m in added if m.split(".")[0] in LEFT_OUT) == []
    assert "hbwrap.policy.gates" not in added  # no restart was planned: no gate to pass


def test_a_planned_restart_brings_the_gates():
    added = _modules("import json\n" + EXERCISE + """
from hbwrap.policy import machine
st.phase, st.end = machine.Phase.ENDED, AttemptEnd(exit_code=1)
machine._step_ended(st, policy.Observations(), 101.0, opts, random.Random(1), [])
assert st.phase is machine.Phase.BACKOFF, st.phase
""") - _bare()
    assert "hbwrap.policy.gates" in added


def test_what_is_imported_lazily_still_works_when_it_is_needed():
    code = """
from hbwrap import approval, procs
from hbwrap.model import parse_iso
assert "ctypes" not in sys.modules and "pwd" not in sys.modules and "datetime" not in sys.modules
print(json.dumps({"who": approval.who(), "subreaper": procs.set_child_subreaper(),
                  "other_spelling": parse_iso("2024-01-01T00:00:00+00:00")}))
"""
    r = subprocess.run([sys.executable, "-c", "import sys, json\n" + code], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["who"].endswith("@" + socket.gethostname()) and got["who"].split("@")[0]
    assert got["subreaper"] is True
    assert got["other_spelling"] == 1704067200.0


# what the supervisor imports only when a run uses it: a probe or an alert command (subprocess), a webhook or
# ping (threading, urllib, ssl, http), a failure's traceback, back-off jitter (random), the CLI and its views
# (typer, rich), the config file (tomllib, tomli_w), a lease across hosts (psycopg), an approval's who (socket)
SUPERVISOR = ("hbwrap.entry", "hbwrap.runargs", "hbwrap.config_merge", "hbwrap.supervisor", "hbwrap.orphans")
SUPERVISOR_LEAVES_OUT = ("subprocess", "socket", "traceback", "random", "threading", "urllib", "ssl", "http",
                         "typer", "click", "rich", "tomllib", "tomli_w", "psycopg", "hbwrap.cli", "hbwrap.alerts",
                         "hbwrap.views", "hbwrap.lease_pg", "hbwrap.approval", "hbwrap.activity", "hbwrap.retryafter",
                         # adopting a run, a restart's gates, tree samples: only when a run gets there
                         "hbwrap.takeover", "hbwrap.policy.gates", "hbwrap.proctable", "hbwrap.incident",
                         # the keeper's ends of the log and the channel
                         "hbwrap.logwriter", "hbwrap.channelwriter")


def test_the_supervisor_imports_what_a_run_may_need_only_when_it_needs_it():
    added = _modules("import " + ", ".join(SUPERVISOR)) - _bare()
    assert set(SUPERVISOR) <= added
    assert sorted(m for m in added if m in SUPERVISOR_LEAVES_OUT or m.split(".")[0] in SUPERVISOR_LEAVES_OUT
                  or any(m.startswith(p + ".") for p in SUPERVISOR_LEAVES_OUT)) == []


# the keeper runs as `python -I -S` (no site, no venv): os, signal (as _signal), select, fcntl and its own
# modules; none of the stdlib packages a full hbwrap start brings, nor hbwrap's state code
KEEPER_LEAVES_OUT = ("json", "re", "enum", "collections", "pathlib", "subprocess", "typing", "dataclasses",
                     "threading", "signal", "functools", "hbwrap.errors", "hbwrap.model", "hbwrap.jobstore",
                     "hbwrap.options", "hbwrap.supervisor", "hbwrap.record", "hbwrap.proctable", "hbwrap.policy",
                     "hbwrap.logfollower", "hbwrap.channelreader")


def test_the_keeper_imports_almost_nothing():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = (f"import sys\nsys.path.insert(0, {root!r})\nbefore = set(sys.modules)\nimport hbwrap.keeper\n"
             "sys.stdout.write(' '.join(sorted(set(sys.modules) - before)))\n")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    added = set(r.stdout.split())
    assert {"hbwrap.keeper", "hbwrap.spawn", "hbwrap.logwriter", "hbwrap.channelwriter"} <= added
    assert sorted(m for m in added if m in KEEPER_LEAVES_OUT or m.split(".")[0] in KEEPER_LEAVES_OUT) == []


def test_the_supervisor_imports_no_pathlib():
    # pathlib brings fnmatch, ntpath, urllib.parse and ipaddress: 0.7 MB of a supervisor; job paths are str.
    # (Checked without site: this venv's editable-install finder imports pathlib itself.)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = (f"import sys\nsys.path.insert(0, {root!r})\n"
             "import hbwrap.entry, hbwrap.runargs, hbwrap.config_merge, hbwrap.supervisor, hbwrap.takeover\n"
             "sys.stdout.write(' '.join(sorted(sys.modules)))\n")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.split())
    assert "hbwrap.supervisor" in loaded
    assert sorted(loaded & {"pathlib", "urllib", "urllib.parse", "ipaddress", "fnmatch", "ntpath"}) == []
