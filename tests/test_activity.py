"""--activity: the pure decision over made-up samples, and real processes' samples (burner, sleeper, writer)."""
from __future__ import annotations

import subprocess
import time

import pytest

from conftest import wait_until
from hbwrap import procs, proctable
from hbwrap.activity import (ProcSample, activity_alive, fmt_bytes, fmt_span, parse_activity, sample_tree,
                             tree_activity)
from hbwrap.errors import UsageError
from proc_helpers import BUSY, Busy


@pytest.fixture
def busy(tmp_path):
    b = Busy(tmp_path)
    yield b
    b.cleanup()


# --- the decision, with injected numbers -------------------------------------------------------------

def test_nothing_grew_is_not_alive_and_says_what_was_measured():
    assert activity_alive((12.0, 5000), (12.0, 5000), 300, ("cpu", "io")) == \
        (False, "0.0% CPU, 0 bytes I/O over 5m")


@pytest.mark.parametrize("cpu_gain, alive", [(3.0, True), (2.99, False), (0.0, False), (60.0, True)])
def test_cpu_must_grow_by_one_percent_of_a_core(cpu_gain, alive):
    result, detail = activity_alive((100.0, 0), (100.0 + cpu_gain, 0), 300, ("cpu",))
    assert result is alive
    assert detail == f"{cpu_gain / 300 * 100:.1f}% CPU over 5m"


def test_io_growth_counts_only_when_asked_for():
    assert activity_alive((1.0, 100), (1.0, 101), 60, ("io",)) == (True, "1 byte I/O over 1m")
    assert activity_alive((1.0, 100), (1.0, 5_000_000), 60, ("cpu",)) == (False, "0.0% CPU over 1m")
    assert activity_alive((1.0, 100), (1.0, 5_000_000), 90, ("cpu", "io"))[0] is True


def test_counters_that_shrink_are_no_growth():
    assert activity_alive((50.0, 9000), (10.0, 10), 30, ("cpu", "io")) == (False, "0.0% CPU, 0 bytes I/O over 30s")


def test_zero_elapsed_and_no_kinds():
    assert activity_alive((1.0, 0), (1.0, 0), 0, ("cpu",)) == (False, "0.0% CPU over 0ms")
    assert activity_alive((1.0, 0), (9.0, 9), 10, ()) == (False, "no activity measured over 10s")


def sample(mono, cpu_s, io_bytes, processes, keeper=None):
    return {"mono": mono, "keeper_pid": keeper, "cpu_s": cpu_s, "io_bytes": io_bytes, "procs": processes}


def test_per_process_io_survives_a_process_exiting():
    before = sample(0, 5.0, 10_000, {10: ProcSample(1, 0, 0, 4000, 4000), 11: ProcSample(2, 0, 0, 1000, 1000)})
    # 10 exited (its 8000 bytes left the total) while 11 wrote 50 bytes: the total shrank, the tree was busy
    after = sample(60, 5.0, 2050, {11: ProcSample(2, 0, 0, 1000, 1050)})
    assert activity_alive(before, after, 60, ("io",)) == (True, "50 bytes I/O over 1m")
    assert activity_alive((5.0, 10_000), (5.0, 2050), 60, ("io",))[0] is False  # totals alone miss it


def test_a_new_process_or_a_reused_pid_counts_all_its_io_and_the_keeper_none():
    before = sample(0, 1.0, 0, {10: ProcSample(1, 0, 0, 0, 0), 5: ProcSample(0, 0, 0, 100, 100)}, keeper=5)
    reused = sample(10, 1.0, 30, {10: ProcSample(99, 0, 0, 10, 20), 5: ProcSample(0, 0, 0, 900, 900)}, keeper=5)
    assert activity_alive(before, reused, 10, ("io",)) == (True, "30 bytes I/O over 10s")
    keeper_only = sample(10, 1.0, 0, {10: ProcSample(1, 0, 0, 0, 0), 5: ProcSample(0, 0, 0, 5000, 5000)}, keeper=5)
    assert activity_alive(before, keeper_only, 10, ("io",))[0] is False


def test_parse_activity():
    assert parse_activity("cpu,io") == ("cpu", "io")
    assert parse_activity(" IO ") == ("io",)
    assert parse_activity(["cpu", "cpu"]) == ("cpu",)
    assert parse_activity("none") == () and parse_activity(None) == ()
    with pytest.raises(UsageError, match="--activity: unknown kind 'disk'"):
        parse_activity("cpu,disk")
    with pytest.raises(UsageError):
        parse_activity("cpu,")


def test_formats():
    assert [fmt_span(s) for s in (0.25, 4.5, 45, 300, 330, 7200, 3900, 90000)] == \
        ["250ms", "4.5s", "45s", "5m", "5m30s", "2h", "1h05m", "1d1h"]
    assert [fmt_bytes(n) for n in (0, 1, 999, 1500, 12_000_000, 3_100_000_000)] == \
        ["0 bytes", "1 byte", "999 bytes", "1.5 kB", "12 MB", "3.1 GB"]


# --- real processes ----------------------------------------------------------------------------------

def test_a_cpu_burners_sample_grows(busy):
    burner = busy.start("burn")
    first = sample_tree([burner.pid])
    assert set(first["procs"]) == {burner.pid}
    later = wait_until(lambda: (s := sample_tree([burner.pid]))["cpu_s"] >= first["cpu_s"] + 0.1 and s,
                       what="the burner to use 0.1 s of CPU")
    alive, detail = activity_alive(first, later, later["mono"] - first["mono"], ("cpu",))
    assert alive, detail


def test_a_sleeping_process_does_not_grow(busy):
    sleeper = busy.start("idle")
    busy.wait_sleeping(sleeper.pid)
    first = sample_tree([sleeper.pid])
    time.sleep(0.5)  # the measurement window itself, not a synchronisation
    later = sample_tree([sleeper.pid])
    assert later["cpu_s"] == first["cpu_s"] and later["io_bytes"] == first["io_bytes"]
    alive, detail = activity_alive(first, later, later["mono"] - first["mono"], ("cpu", "io"))
    assert not alive and detail.startswith("0.0% CPU, 0 bytes I/O over "), detail


def test_a_file_writers_io_grows(busy, tmp_path):
    writer = busy.start("write", tmp_path / "out.bin")
    first = sample_tree([writer.pid])
    later = wait_until(lambda: (s := sample_tree([writer.pid]))["io_bytes"] >= first["io_bytes"] + 8192 and s,
                       what="the writer to write 8 KiB")
    assert activity_alive(first, later, later["mono"] - first["mono"], ("io",))[0]


def test_cpu_of_reaped_children_counts_and_the_keepers_own_does_not(busy, tmp_path):
    # sh stands in for the keeper: it reaps a child that burned 0.3 s of CPU, then waits
    script = f'"$@" burncpu 0.3 tag:{tmp_path}; echo DONE; exec sleep 60'
    keeper = subprocess.Popen(["sh", "-c", script, "sh", *BUSY], stdout=subprocess.PIPE, process_group=0)
    busy.procs.append(keeper)
    assert keeper.stdout.readline().strip() == b"DONE"
    st = proctable.read_stat(keeper.pid)
    cpu_s, io_bytes = tree_activity([keeper.pid], keeper_pid=keeper.pid)
    assert cpu_s >= 0.3 - 0.02
    assert cpu_s == pytest.approx((st.cutime + st.cstime) / proctable.CLK_TCK, abs=0.02)
    with_own = sample_tree([keeper.pid])["cpu_s"]  # no keeper named: its own counters count too
    assert with_own >= cpu_s


def test_the_tree_includes_children_and_the_process_group(busy, tmp_path):
    parent = busy.start("zombie")
    joiner = busy.start("idle", process_group=parent.pid)  # same group, not a descendant
    sample = sample_tree([parent.pid])
    assert {parent.pid, joiner.pid} <= set(sample["procs"])
    assert len(sample["procs"]) == 3  # and the zombie child
    assert sample_tree([1])["procs"] == {}  # never init's tree


def test_the_walk_down_from_the_keeper_finds_what_a_scan_of_every_process_finds(busy, tmp_path):
    # sh stands in for the keeper, with two children, one of them with a child of its own
    script = f'"$@" idle tag:{tmp_path} & sh -c \'"$@" idle tag:{tmp_path} & wait\' sh "$@" & wait'
    keeper = subprocess.Popen(["sh", "-c", script, "sh", *BUSY], stdout=subprocess.PIPE, process_group=0)
    busy.procs.append(keeper)
    wait_until(lambda: len(procs.descendants(keeper.pid)) >= 3, 10, what="the tree")
    walked = proctable.subtree_table(keeper.pid)
    assert walked is not None and set(walked) == {keeper.pid, *procs.descendants(keeper.pid)}
    assert (set(sample_tree([keeper.pid], keeper_pid=keeper.pid)["procs"])
            == set(sample_tree([keeper.pid], keeper_pid=keeper.pid, table=proctable.proc_table())["procs"]))
    assert proctable.subtree_table(2 ** 22 + 1) is None  # (beyond pid_max: never a process)
