"""hbwrap metrics: Prometheus text checked with the official prometheus_client parser; the atomic writer."""
import os
import stat
from datetime import datetime

import pytest

from hbwrap import metrics
from hbwrap.errors import HbwrapError

parser = pytest.importorskip("prometheus_client.parser")

T0 = "2024-05-01T03:00:00.000Z"
T1 = "2024-05-01T03:10:30.500Z"
TP = "2024-05-01T03:09:00.250Z"
TO = "2024-05-01T03:10:00.000Z"


def epoch(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def row(name, status="succeeded", **over):
    base = {"name": name, "status": status, "attempt": 2, "restarts": 1, "child_pid": None,
            "supervisor_pid": None, "checkpoint": "page-7", "last_output_at": TO, "last_progress_at": TP,
            "exit_code": 0, "run_id": "20240501T030000Z-abcdef", "started_at": T0, "ended_at": T1, "events": []}
    base.update(over)
    return base


def ev(event, **kw):
    return {"ts": T0, "job": "j", "run_id": "r", "attempt": 1, "event": event, **kw}


def parse(text):
    """{family name: (type, help, [(sample name, labels, value)])} via prometheus_client's parser."""
    out = {}
    for fam in parser.text_string_to_metric_families(text):
        out[fam.name] = (fam.type, fam.documentation, [(s.name, s.labels, s.value) for s in fam.samples])
    return out


def value(families, family, sample=None, **labels):
    hits = [v for name, lab, v in families[family][2] if lab == labels and (sample is None or name == sample)]
    assert len(hits) == 1, f"{family} {labels}: {families[family][2]}"
    return hits[0]


def test_finished_job_metrics_parse_with_official_parser():
    events = [ev("run_start"), ev("attempt_start"), ev("stall", reason="response"), ev("kill", signal="SIGTERM"),
              ev("restart", delay_s=1.0), ev("attempt_start", attempt=2), ev("stall", reason="progress"),
              ev("stall", reason="response"), ev("success")]
    text = metrics.metrics_text([row("reddit-3am", events=events)])
    fams = parse(text)
    job = {"job_name": "reddit-3am"}
    assert value(fams, "hbwrap_last_run_start_timestamp_seconds", **job) == pytest.approx(epoch(T0))
    assert value(fams, "hbwrap_last_run_end_timestamp_seconds", **job) == pytest.approx(epoch(T1))
    assert value(fams, "hbwrap_last_exit_code", **job) == 0
    assert value(fams, "hbwrap_run_attempts", **job) == 2
    assert value(fams, "hbwrap_run_restarts", **job) == 1
    assert value(fams, "hbwrap_last_progress_timestamp_seconds", **job) == pytest.approx(epoch(TP))
    assert value(fams, "hbwrap_last_output_timestamp_seconds", **job) == pytest.approx(epoch(TO))
    assert value(fams, "hbwrap_supervisor_up", **job) == 0
    assert value(fams, "hbwrap_child_up", **job) == 0
    # stalls: a counter, every known reason present so that rate() works from the first scrape
    assert fams["hbwrap_stalls"][0] == "counter"
    stalls = {lab["reason"]: v for name, lab, v in fams["hbwrap_stalls"][2] if name == "hbwrap_stalls_total"}
    assert stalls == {"response": 2, "progress": 1, "timeout": 0, "probe": 0, "deadline": 0, "repeat": 0}
    assert value(fams, "hbwrap_events", "hbwrap_events_total", event="attempt_start", **job) == 2
    assert value(fams, "hbwrap_events", "hbwrap_events_total", event="escalate", **job) == 0
    # the status state set: one series per status, exactly one of them 1
    states = {lab["status"]: v for _, lab, v in fams["hbwrap_status"][2]}
    assert set(states) == {"starting", "running", "backoff", "awaiting-approval", "succeeded", "failed", "escalated", "stopped",
                           "orphaned", "unreadable"}
    assert states["succeeded"] == 1 and sum(states.values()) == 1
    for name, (kind, doc, samples) in fams.items():
        assert name.startswith("hbwrap_") and doc, name
        for _, labels, _ in samples:
            assert "job" not in labels and labels["job_name"] == "reddit-3am"
    # HELP and TYPE lines precede each family; no sample timestamps (the textfile collector rejects them)
    assert text.endswith("\n")
    for line in text.splitlines():
        if not line.startswith("#"):
            assert len(line.rsplit(" ", 1)) == 2 and "} " in line


def test_running_job_and_several_jobs():
    rows = [
        row("b-running", status="running", supervisor_pid=4242, child_pid=4243, ended_at=None, exit_code=None,
            attempt=1, restarts=0),
        row("a-failed", status="failed", exit_code=3),
    ]
    fams = parse(metrics.metrics_text(rows))
    assert value(fams, "hbwrap_supervisor_up", job_name="b-running") == 1
    assert value(fams, "hbwrap_child_up", job_name="b-running") == 1
    assert value(fams, "hbwrap_status", job_name="b-running", status="running") == 1
    assert value(fams, "hbwrap_status", job_name="b-running", status="failed") == 0
    assert value(fams, "hbwrap_last_exit_code", job_name="a-failed") == 3
    # unknown values leave their series out rather than inventing one
    assert [lab for _, lab, _ in fams["hbwrap_last_exit_code"][2]] == [{"job_name": "a-failed"}]
    assert [lab for _, lab, _ in fams["hbwrap_last_run_end_timestamp_seconds"][2]] == [{"job_name": "a-failed"}]


def test_unreadable_and_never_run_jobs():
    unreadable = {"name": "broken", "status": "unreadable", "error": "corrupt", "attempt": None, "restarts": None,
                  "child_pid": None, "supervisor_pid": None, "checkpoint": None, "last_output_at": None,
                  "last_progress_at": None, "exit_code": None, "events": None}
    never = dict(unreadable, name="fresh", status="never-run")
    del never["events"]
    fams = parse(metrics.metrics_text([unreadable, never]))
    assert value(fams, "hbwrap_status", job_name="broken", status="unreadable") == 1
    assert value(fams, "hbwrap_status", job_name="fresh", status="never-run") == 1
    assert value(fams, "hbwrap_status", job_name="fresh", status="unreadable") == 0
    assert value(fams, "hbwrap_supervisor_up", job_name="broken") == 0
    assert "hbwrap_last_exit_code" not in fams and "hbwrap_run_attempts" not in fams


@pytest.mark.parametrize("name", ['quo"te', "back\\slash", "new\nline", "ünïcode job", 'all \\"\n of them'])
def test_label_values_are_escaped(name):
    events = [ev("stall", reason='we"ird\\reason\n')]
    fams = parse(metrics.metrics_text([row(name, events=events)]))
    assert value(fams, "hbwrap_supervisor_up", job_name=name) == 0
    assert value(fams, "hbwrap_stalls", "hbwrap_stalls_total", job_name=name, reason='we"ird\\reason\n') == 1


def test_no_jobs_is_an_empty_valid_file():
    assert metrics.metrics_text([]) == ""
    assert list(parser.text_string_to_metric_families("")) == []


def test_escape_label_rules():
    assert metrics.escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_write_atomic(tmp_path):
    target = tmp_path / "hbwrap.prom"
    target.write_text("old\n")
    text = metrics.metrics_text([row("j")])
    metrics.write_atomic(target, text)
    assert target.read_text() == text
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hbwrap.prom"]  # no temporary file left behind


def test_write_atomic_failure_names_the_file(tmp_path):
    with pytest.raises(HbwrapError, match="cannot write metrics to .*missing"):
        metrics.write_atomic(tmp_path / "missing" / "hbwrap.prom", "x\n")
