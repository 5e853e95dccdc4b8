"""Smoke test of the benchmark harness (scripts/bench.py): tiny sizes, one run of each scenario.

Checks only that the harness runs to the end and reports every scenario row (contenders that are not
installed, such as supervisord in the test venv, must show up as skipped); never any timing. Uses the
interpreter running the tests, so the hbwrap next to it (or $HBWRAP_BIN) is the one measured; needs no
network.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench.py"
SCENARIOS = ["startup", "jobmem", "output", "binary", "idle", "detection", "kill", "memory", "scale", "takeover", "selfheal",
             "blocked", "incident", "repeat", "fleet", "approval"]


@pytest.mark.timeout(120)
def test_bench_smoke_reports_every_scenario(tmp_path):
    out = tmp_path / "bench-results.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--smoke", "--output", str(out)],
                          cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    doc = json.loads(out.read_text())

    assert doc["mode"] == "smoke"
    assert doc["errors"] == {}, doc["errors"]
    for key in ("nproc", "cpu_model", "kernel", "python"):
        assert doc["machine"].get(key), key

    rows = doc["rows"]
    assert {r["scenario"] for r in rows} == set(SCENARIOS)
    for scenario in SCENARIOS:
        mine = [r for r in rows if r["scenario"] == scenario]
        hb = [r for r in mine if r["contender"].startswith("hbwrap")]
        assert hb, f"no hbwrap row for {scenario}"
        for r in hb:
            assert isinstance(r["median"], (int, float)), r
            assert r["target"] is None or r["pass"] in (True, False), r
        for r in mine:
            # every row is either measured or says why it was skipped
            assert r["skipped"] or r["n"] >= 1, r
    # the contenders beside hbwrap are all there (measured or skipped)
    contenders = {(r["scenario"], r["contender"].split()[0]) for r in rows}
    for expected in [("startup", "timeout"), ("startup", "python3"), ("output", "gen"), ("output", "supervisord"),
                     ("binary", "gen"), ("idle", "supervisord"), ("detection", "timeout"), ("kill", "timeout"),
                     ("memory", "supervisord"), ("scale", "supervisord")]:
        assert expected in contenders, expected
    if not (Path(sys.executable).parent / "supervisord").exists():
        assert all(r["skipped"] for r in rows if r["contender"].startswith("supervisord")) or \
            any(os.access(os.path.join(d, "supervisord"), os.X_OK) for d in os.environ.get("PATH", "").split(":"))
    # nothing the benchmark started is left behind: its temporary state dir is gone
    assert "hbwrap-bench-" in proc.stderr
    state = next(line.split("state in ", 1)[1].strip() for line in proc.stderr.splitlines() if "state in " in line)
    assert not Path(state).exists()
