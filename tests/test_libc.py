"""hbwrap.libc: prctl and inotify through _ctypes (no ctypes package), checked on the real kernel."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hbwrap import libc
from hbwrap.inotify import Inotify


def test_a_subreaper_adopts_the_orphans_of_its_descendants():
    # the probe makes itself a subreaper, then a child of it forks a grandchild and exits at once: the
    # orphaned grandchild must be reparented to the probe, not to init
    probe = """
import json, os, sys, time
from hbwrap import procs
ok = procs.set_child_subreaper()
r, w = os.pipe()
child = os.fork()
if child == 0:
    parent = os.getpid()
    if os.fork() == 0:
        os.close(r)
        end = time.monotonic() + 10
        while os.getppid() == parent and time.monotonic() < end:  # until the child's exit orphans it
            time.sleep(0.01)
        os.write(w, str(os.getppid()).encode())
        os._exit(0)
    os._exit(0)
os.close(w)
os.waitpid(child, 0)
ppid = int(os.read(r, 32) or b"0")
print(json.dumps({"ok": ok, "me": os.getpid(), "grandchild_parent": ppid,
                  "ctypes": "ctypes" in sys.modules}))
"""
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["ok"] is True and got["grandchild_parent"] == got["me"], got
    assert got["ctypes"] is False  # _ctypes did it


def test_inotify_reports_the_changed_names_and_a_failed_watch_is_an_oserror(tmp_path):
    watcher = Inotify()
    try:
        watcher.watch_dir(str(tmp_path))
        (tmp_path / "beat").write_text("x")
        assert (str(tmp_path), "beat") in watcher.read()
        assert watcher.read() == set()
        with pytest.raises(OSError, match="inotify_add_watch failed for"):
            watcher.watch_dir(str(tmp_path / "missing"))
    finally:
        watcher.close()


def test_a_symbol_libc_lacks_is_an_oserror():
    with pytest.raises(OSError):
        libc.call("hbwrap_no_such_function")


HEAP_PROBE = """
import os, resource, sys
from hbwrap import libc
tuned = sys.argv[1] == "tuned" and libc.keep_heap_for(256 * 1024)
src = os.urandom(256 * 1024)
table = bytes.maketrans(b"0123456789", b"0000000000")
def turn():  # the buffers of one supervisor turn over 256 KiB of output: the read, its masked copy, a slice
    a = src.translate(table)
    b = a.translate(table)
    c = b[1:]
    return len(a) + len(b) + len(c)
for _ in range(20):
    turn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(500):
    turn()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _heap_faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_keep_heap_for_stops_the_page_faults_of_buffers_freed_and_made_again():
    # glibc's default: 256 KiB buffers come from mmap or a heap that is trimmed as soon as they are freed,
    # so every turn faults its pages in again (counted by the kernel, not timed)
    tuned, tuned_faults = _heap_faults("tuned")
    if not tuned:
        pytest.skip("no glibc mallopt here")
    _, default_faults = _heap_faults("default")
    assert default_faults > 500 * 64  # at least one buffer's 64 pages each turn
    assert tuned_faults < default_faults // 20, (tuned_faults, default_faults)


def test_keep_heap_for_still_returns_huge_allocations_to_the_kernel():
    probe = """
import resource
from hbwrap import libc
assert libc.keep_heap_for(256 * 1024)
def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024
base = rss_kb()
big = b"x" * (200 * 1024 * 1024)
held = rss_kb()
del big
print(held - base, rss_kb() - base)
"""
    held, after = map(int, subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                          timeout=60, check=True).stdout.split())
    assert held > 150 * 1024
    assert after < 8 * 1024, (held, after)
