"""One job across hosts (--lease-url) with a real PostgreSQL: two state dirs on this machine play two hosts.

Host death is a SIGKILL of a holder's supervisor, keeper and command together (with --no-self-heal); a
partition is a TCP proxy between one holder and the database that the test cuts.
"""
import json
import os
import signal
import time
from urllib.parse import urlsplit

import pytest

from conftest import alive, names, wait_until
from helpers.pgtest import pg, pg_server  # noqa: F401 (fixtures)
from helpers.tcpproxy import TcpProxy

STAMPED = ("import os, sys, time\n"
           "out = open(sys.argv[1], 'a')\n"
           "out.write(f'start {os.environ[\"HBWRAP_FENCE\"]} {os.environ.get(\"HBWRAP_RESUME_FROM\", \"-\")}\\n')\n"
           "print('checkpoint: step-' + os.environ['HBWRAP_ATTEMPT'], flush=True)\n"
           "for i in range(int(sys.argv[2])):\n"
           "    out.write(f'{time.time():.3f} {sys.argv[3]}\\n'); out.flush(); time.sleep(0.05)\n")


class Host:
    """One of the machines: its own state dir, its host name, the same job line."""

    def __init__(self, hb, name: str, url: str):
        self.hb, self.name, self.url = hb, name, url
        self.env = {**hb.env, "HBWRAP_STATE_DIR": str(hb.tmp / f"state-{name}")}

    def run(self, *args, **kw):
        return self.hb.start("run", "--lease-url", self.url, "--host", self.name, *args, env=self.env, **kw)

    def finish(self, proc, timeout=40):
        return self.hb.finish(proc, timeout)

    def events(self, job):
        path = self.hb.tmp / f"state-{self.name}" / job / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def state(self, job):
        try:
            return json.loads((self.hb.tmp / f"state-{self.name}" / job / "state.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}


def stamped(hb, stamps, n, who):
    return ["python3", "-c", STAMPED, stamps, str(n), who, hb.tag]


def fleet(hb, url):
    r = hb.run("status", "--fleet", "--lease-url", url, "--json")
    assert r.returncode == 0, r
    return {row["name"]: row for row in json.loads(r.out)}


def test_the_same_line_on_two_hosts_runs_on_one(hb, pg):
    a, b = Host(hb, "host-a", pg.url()), Host(hb, "host-b", pg.url())
    count = hb.path("count")
    cmd = hb.agent("count:" + count, "sleep:2", "exit:0")
    first = a.run("--name", "post", "--", *cmd)
    wait_until(lambda: os.path.exists(count), 15)
    skipped = b.finish(b.run("--name", "post", "-v", "--", *cmd))
    assert skipped.returncode == 0 and "already running on host-a" in skipped.err, skipped
    failed = b.finish(b.run("--name", "post", "--if-running", "fail", "--", *cmd))
    assert failed.returncode == 75, failed
    assert a.finish(first).returncode == 0
    assert len(open(count).read().split()) == 1
    row = fleet(hb, pg.url())["post"]
    assert row["holder_host"] == "host-a" and row["status"] == "succeeded" and row["lease"] == "released", row


def test_many_hosts_starting_in_the_same_second_start_it_once(hb, pg):
    count = hb.path("count")
    hosts = [Host(hb, f"h{i}", pg.url()) for i in range(5)]
    procs = [h.run("--name", "burst", "--", *hb.agent("count:" + count, "sleep:1", "exit:0")) for h in hosts]
    results = [h.finish(p) for h, p in zip(hosts, procs)]
    assert all(r.returncode == 0 for r in results), results
    assert len(open(count).read().split()) == 1


def test_host_death_the_next_run_elsewhere_continues_after_the_lease_expired(hb, pg):
    a, b = Host(hb, "host-a", pg.url()), Host(hb, "host-b", pg.url())
    stamps = hb.path("stamps")
    first = a.run("--name", "night", "--lease", "3s", "--no-self-heal", "--", *stamped(hb, stamps, 400, "a"))
    wait_until(lambda: a.state("night").get("checkpoint") == "step-1" and
               fleet(hb, pg.url())["night"]["checkpoint"] == "step-1", 15)
    st = a.state("night")
    for pid in (st["supervisor_pid"], st["keeper_pid"]):
        os.kill(pid, signal.SIGKILL)
    os.killpg(st["child_pid"], signal.SIGKILL)  # the host is gone: all of it at once
    first.wait()
    early = b.finish(b.run("--name", "night", "--lease", "3s", "--", *stamped(hb, stamps, 1, "b")))
    assert early.returncode == 0 and "start 2" not in open(stamps).read(), "before the expiry: skipped"
    wait_until(lambda: fleet(hb, pg.url())["night"]["lease"] == "expired", 10)
    later = b.finish(b.run("--name", "night", "--lease", "3s", "--", *stamped(hb, stamps, 2, "b")))
    assert later.returncode == 0, later
    starts = [line.split() for line in open(stamps).read().splitlines() if line.startswith("start")]
    assert starts == [["start", "1", "-"], ["start", "2", "step-1"]], starts
    ev = b.events("night")
    assert ev[0]["event"] == "takeover" and ev[0]["by"] == "run" and ev[0]["previous_host"] == "host-a", ev[0]
    assert {e["run_id"] for e in ev} == {st["run_id"]}, "the same run, a new attempt"
    assert [e["attempt"] for e in ev if e["event"] == "attempt_start"] == [2]


def test_a_partitioned_holder_stops_its_command_before_its_lease_expires(hb, pg, pg_server):
    parts = urlsplit(pg_server)
    stamps = hb.path("stamps")
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        a = Host(hb, "host-a", proxy.url(pg.url()))
        b = Host(hb, "host-b", pg.url())
        first = a.run("--name", "cut", "--lease", "3s", "--", *stamped(hb, stamps, 2000, "a"))
        wait_until(lambda: "a" in open(stamps).read().split() if os.path.exists(stamps) else False, 15)
        wait_until(lambda: fleet(hb, pg.url())["cut"]["checkpoint"] == "step-1", 10)
        proxy.cut("blackhole")
        cut_at = time.time()
        r = a.finish(first, timeout=30)
        assert r.returncode == 75, r
        assert "lost the lease" in r.err, r
        ev = a.events("cut")
        assert "lease_lost" in names(ev) and ev[-1]["event"] == "stop" and ev[-1]["exit_code"] == 75, names(ev)
        last_a = max(float(line.split()[0]) for line in open(stamps) if line.endswith(" a\n"))
        wait_until(lambda: fleet(hb, pg.url())["cut"]["lease"] == "expired", 10)
        expired_seen = time.time()
        later = b.finish(b.run("--name", "cut", "--lease", "3s", "--", *stamped(hb, stamps, 3, "b")))
        assert later.returncode == 0, later
    first_b = min(float(line.split()[0]) for line in open(stamps) if line.endswith(" b\n"))
    assert last_a < first_b, "the two holders' commands overlapped"
    assert last_a < cut_at + 3.0, "the old holder's command outlived its lease"
    assert expired_seen >= last_a


def test_a_hung_holder_is_stopped_by_its_keeper_before_the_lease_expires(hb, pg, pg_server):
    parts = urlsplit(pg_server)
    stamps = hb.path("stamps")
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        a = Host(hb, "host-a", proxy.url(pg.url()))
        first = a.run("--name", "hung", "--lease", "3s", "--no-self-heal", "--", *stamped(hb, stamps, 2000, "a"))
        wait_until(lambda: os.path.exists(stamps) and " a\n" in open(stamps).read(), 15)
        child = a.state("hung")["child_pid"]
        first.send_signal(signal.SIGSTOP)  # the supervisor hangs ...
        proxy.cut("refuse")                # ... and cannot renew anyway
        stopped_at = time.time()
        wait_until(lambda: not alive(child), 10, what="the keeper to stop the command")
        assert time.time() - stopped_at < 3.0, "the keeper stopped it before the 3 s lease could expire"
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert "shared lease is running out" in (hb.tmp / "state-host-a" / "hung" / "keeper.err").read_text()


def test_fleet_view_and_a_database_that_cannot_be_reached(hb, pg):
    url = pg.url()
    a = Host(hb, "host-a", url)
    assert a.finish(a.run("--name", "seen", "--", "sh", "-c", "echo checkpoint: c9", hb.tag)).returncode == 0
    row = fleet(hb, url)["seen"]
    assert row["holder_host"] == "host-a" and row["checkpoint"] == "c9" and row["generation"] == 1, row
    text = hb.run("status", "--fleet", "--lease-url", url)
    assert text.returncode == 0 and "host-a" in text.out and "seen" in text.out, text
    secret = "s3cr3t-pass"
    dead = f"postgresql://postgres:{secret}@127.0.0.1:1/test"
    r = hb.run("run", "--name", "x", "--lease-url", dead, "--", "true")
    assert r.returncode == 125 and len(r.err.strip().splitlines()) == 1, r
    assert secret not in r.err and "127.0.0.1" in r.err, r
    assert hb.run("status", "--fleet", "--lease-url", dead).returncode == 125


def test_credentials_stay_out_of_events_status_and_the_commands_environment(hb, pg):
    url = pg.url()
    env_file = hb.path("env")
    env = {**hb.env, "HBWRAP_LEASE_URL": url}
    r = hb.run("run", "--name", "creds", "--", *hb.agent("env:" + env_file, "exit:0"), env=env)
    assert r.returncode == 0, r
    got = json.load(open(env_file))
    assert "HBWRAP_LEASE_URL" not in got and int(got["HBWRAP_FENCE"]) >= 1, got
    for text in (json.dumps(hb.events("creds")), hb.run("status", "creds", "--json").out):
        assert "postgresql://" not in text, text


@pytest.mark.parametrize("url", ["http://db/x", "postgresql://h:notaport/db", "postgresql://h:70000/db",
                                 "postgresql://h/db?hbwrap_schema=no-such;drop"])
def test_a_malformed_lease_url_is_a_usage_error(hb, url):
    r = hb.run("run", "--lease-url", url, "--", "true")
    assert r.returncode == 2 and "--lease-url" in r.err and "Traceback" not in r.err, r
