"""Modes and a hostile state dir: nothing hbwrap creates is open to others, and it never writes through
(or reads through) a file that is not a regular file of its own in a state dir that only its user can change."""
import json
import os
import shutil
import stat
from pathlib import Path

import pytest


def walk_modes(top):
    """(path, mode) of `top` and everything below it."""
    found = [(str(top), stat.S_IMODE(os.lstat(top).st_mode))]
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            found.append((path, stat.S_IMODE(os.lstat(path).st_mode)))
    return found


def umask0():
    os.umask(0)


def test_every_directory_and_file_created_under_umask_000_is_private(hb):
    base = hb.tmp / "b"
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)
    env = {**hb.env, "HBWRAP_STATE_DIR": str(base / "local" / "state" / "hbwrap")}
    rotated = base / "local" / "state" / "hbwrap" / "private" / "output.log.1"
    # the keeper rotates once the supervisor has read the log: write until it has (bounded), whatever the load
    script = (f"hbwrap checkpoint one; hbwrap beat; echo checkpoint:two; for i in $(seq 200); do "
              f"head -c 600 /dev/zero; echo; [ -e {rotated} ] && break; sleep 0.05; done; echo {hb.tag}")
    env["PATH"] = os.path.dirname(hb.bin) + os.pathsep + env.get("PATH", "")
    r = hb.run("run", "--name", "private", "--log-max-size", "1000", "--", "sh", "-c", script, env=env,
               preexec_fn=umask0)
    assert r.returncode == 0, r
    created = walk_modes(base / "local")
    assert len(created) > 8, created
    open_to_others = [(p, oct(m)) for p, m in created if m & 0o077]
    assert not open_to_others, open_to_others
    dirs = [(p, oct(m)) for p, m in created if os.path.isdir(p)]
    assert all(m == "0o700" for _, m in dirs), dirs
    assert rotated.exists()  # rotation ran too


def test_config_init_creates_private_parent_directories_under_umask_000(hb):
    target = hb.tmp / "cfg" / "deep" / "er" / "config.toml"
    r = hb.run("config", "init", str(target), preexec_fn=umask0)
    assert r.returncode == 0, r
    for path, mode in walk_modes(hb.tmp / "cfg"):
        assert mode & 0o077 == 0, (path, oct(mode))


# --- a hostile state dir -----------------------------------------------------------------------------

OTHER_UID = 65534  # nobody: "owned by another user", as root runs the tests


def one_line(r, code, *needles):
    assert r.returncode == code, r
    assert "Traceback" not in r.err, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hbwrap:"), r
    for needle in needles:
        assert needle in lines[0], r
    return lines[0]


@pytest.fixture
def marker(hb):
    return hb.tmp / "ran"


def run_marker(hb, marker, *extra, name="nightly", env=None):
    return hb.run("run", "--name", name, *extra, "--", "sh", "-c", f"touch {marker}; echo hi; : {hb.tag}",
                  env=env or hb.env)


@pytest.mark.parametrize("mode, who", [(0o777, "group and others"), (0o770, "group"), (0o1777, "group and others"), (0o702, "others")])
def test_a_state_dir_writable_by_others_is_refused(hb, marker, mode, who):
    hb.state_dir.mkdir()
    os.chmod(hb.state_dir, mode)
    line = one_line(run_marker(hb, marker), 125, str(hb.state_dir), f"writable by {who}", "fix with: chmod go-w")
    assert line.endswith(str(hb.state_dir)) or "chmod go-w " + str(hb.state_dir) in line
    assert not marker.exists()
    for args in (["status"], ["status", "--json"], ["events", "nightly"], ["logs", "nightly"], ["metrics"]):
        one_line(hb.run(*args), 125, str(hb.state_dir), "chmod go-w")
    os.chmod(hb.state_dir, 0o700)  # fixed as the message says: runs again
    assert run_marker(hb, marker).returncode == 0


def test_a_state_dir_owned_by_another_user_is_refused(hb, marker):
    hb.state_dir.mkdir(mode=0o700)
    os.chown(hb.state_dir, OTHER_UID, OTHER_UID)
    one_line(run_marker(hb, marker), 125, str(hb.state_dir), f"uid {OTHER_UID}", "fix with: chown")
    assert not marker.exists()
    one_line(hb.run("status"), 125, str(hb.state_dir))


def test_a_symlinked_state_dir_of_our_own_is_fine(hb, marker):
    real = hb.tmp / "real-state"
    real.mkdir(mode=0o700)
    hb.state_dir.symlink_to(real)
    assert run_marker(hb, marker).returncode == 0
    assert (real / "nightly" / "state.json").exists()


@pytest.mark.parametrize("how", ["world-writable", "other-owner", "symlink"])
def test_a_hostile_job_dir_is_refused(hb, marker, how):
    assert run_marker(hb, marker, name="other").returncode == 0  # a good job beside it
    marker.unlink()
    job = hb.state_dir / "nightly"
    if how == "symlink":
        elsewhere = hb.tmp / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        job.symlink_to(elsewhere)
    else:
        job.mkdir(mode=0o700)
        if how == "world-writable":
            os.chmod(job, 0o777)
        else:
            os.chown(job, OTHER_UID, OTHER_UID)
    line = one_line(run_marker(hb, marker), 125, str(job))
    assert "fix with:" in line
    assert not marker.exists()
    if how == "symlink":
        assert not any((hb.tmp / "elsewhere").iterdir())
    one_line(hb.run("events", "nightly"), 125, str(job))
    one_line(hb.run("logs", "nightly"), 125, str(job))
    rows = {row["name"]: row for row in hb.status()}  # the listing still shows the good job
    assert rows["other"]["status"] == "succeeded"
    assert rows["nightly"]["status"] == "unreadable" and str(job) in rows["nightly"]["error"]


JOB_FILES = ["cursor", "events.jsonl", "output.log", "output.idx", "output.log.1", "output.idx.1", "heartbeat",
             "checkpoint", "state.json", "keeper.json", "keeper-spec.json", "keeper.err", "lock"]


class Victim(type(Path())):
    """A path that can say whether its file is unchanged."""

    def unchanged(self) -> None:
        assert (self.read_bytes(), os.stat(self).st_mtime_ns) == self.before, "the victim file was changed"


@pytest.fixture
def victim(hb):
    """A root-only file in another directory, with a known content and an old mtime."""
    d = hb.tmp / "victim"
    d.mkdir(mode=0o700)
    path = Victim(d / "secret")
    path.write_bytes(b'{"event": "run_start", "secret": "TOP-SECRET"}\n')
    os.chmod(path, 0o600)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    path.before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    return path


def plant(hb, name, filename, how, victim):
    """A finished job `name` whose `filename` is replaced by something that is not a file of ours."""
    job = hb.job_dir(name)
    target = job / filename
    if target.exists() or target.is_symlink():
        target.unlink()
    if how == "symlink":
        target.symlink_to(victim)
    elif how == "hardlink":
        os.link(victim, target)
    elif how == "fifo":
        os.mkfifo(target, 0o600)
    elif how == "other-owner":
        target.write_bytes(victim.read_bytes())
        os.chown(target, OTHER_UID, OTHER_UID)
    return target


def clone_job(hb, source: str, name: str) -> None:
    """A copy of the finished job `source` under `name` (cheaper than running it again)."""
    shutil.copytree(hb.job_dir(source), hb.job_dir(name), copy_function=shutil.copy2, symlinks=True)


def test_a_planted_symlink_in_the_job_dir_is_refused_and_its_target_unchanged(hb, marker, victim):
    assert run_marker(hb, marker).returncode == 0
    for i, filename in enumerate(JOB_FILES):
        name = f"n{i}"
        clone_job(hb, "nightly", name)
        marker.unlink(missing_ok=True)
        target = plant(hb, name, filename, "symlink", victim)
        one_line(run_marker(hb, marker, name=name), 125, str(target), "symbolic link", "fix with:")
        assert not marker.exists(), filename
        victim.unchanged()


@pytest.mark.parametrize("filename", ["cursor", "lock", "output.log", "state.json"])
def test_watch_refuses_a_planted_symlink(hb, marker, victim, filename):
    assert run_marker(hb, marker).returncode == 0
    target = plant(hb, "nightly", filename, "symlink", victim)
    one_line(hb.run("watch", "nightly"), 125, str(target))
    victim.unchanged()


def test_a_state_file_naming_another_job_is_refused(hb, marker):
    assert run_marker(hb, marker).returncode == 0
    clone_job(hb, "nightly", "copy")
    state = json.loads((hb.job_dir("copy") / "state.json").read_text())
    state["status"] = "running"
    (hb.job_dir("copy") / "state.json").write_text(json.dumps(state))
    r = hb.run("watch", "copy")
    one_line(r, 125, "copy")
    assert "takeover" not in [e["event"] for e in hb.event_file("nightly")]


@pytest.mark.parametrize("how", ["hardlink", "fifo", "other-owner"])
def test_a_planted_non_file_in_the_job_dir_is_refused(hb, marker, victim, how):
    assert run_marker(hb, marker).returncode == 0
    for filename in ("cursor", "output.log", "events.jsonl"):
        name = "n-" + filename.replace(".", "-")
        clone_job(hb, "nightly", name)
        marker.unlink(missing_ok=True)
        target = plant(hb, name, filename, how, victim)
        one_line(run_marker(hb, marker, name=name), 125, str(target), "fix with:")
        assert not marker.exists(), filename
        victim.unchanged()


@pytest.mark.parametrize("how", ["symlink", "hardlink", "fifo"])
def test_logs_never_prints_a_planted_output_log(hb, marker, victim, how):
    assert run_marker(hb, marker).returncode == 0
    target = plant(hb, "nightly", "output.log", how, victim)
    for args in (["logs", "nightly"], ["logs", "nightly", "-n", "5"], ["logs", "nightly", "--follow"]):
        r = hb.run(*args, timeout=10)
        one_line(r, 125, str(target))
        assert b"TOP-SECRET" not in r.stdout
    victim.unchanged()


@pytest.mark.parametrize("filename", ["events.jsonl", "state.json"])
def test_events_and_status_never_print_a_planted_file(hb, marker, victim, filename):
    assert run_marker(hb, marker).returncode == 0
    plant(hb, "nightly", filename, "symlink", victim)
    for args in (["events", "nightly"], ["events", "nightly", "--json"], ["status", "nightly", "--json"],
                 ["status"], ["metrics"]):
        r = hb.run(*args, timeout=10)
        assert b"TOP-SECRET" not in r.stdout + r.stderr, r
        assert "Traceback" not in r.err, r
    victim.unchanged()


def test_beat_and_checkpoint_never_write_through_a_symlink(hb, victim):
    hb_link = hb.tmp / "hb-link"
    cp_link = hb.tmp / "cp-link"
    hb_link.symlink_to(victim)
    cp_link.symlink_to(victim)
    env = {**hb.env, "HBWRAP_HEARTBEAT_FILE": str(hb_link), "HBWRAP_CHECKPOINT_FILE": str(cp_link)}
    one_line(hb.run("beat", env=env), 125, str(hb_link), "symbolic link")
    r = hb.run("checkpoint", "page-2", env=env)  # replaces the link itself, atomically
    assert r.returncode == 0, r
    assert cp_link.read_text() == "page-2\n" and not cp_link.is_symlink()
    victim.unchanged()


def test_a_planted_temporary_file_is_not_written_through(hb, victim):
    """write_atomic's `.state.json.PID.tmp` may not be a symlink someone made in advance."""
    from hbwrap.jobstore import write_atomic

    target = hb.tmp / "out.json"
    planted_tmp = hb.tmp / f".out.json.{os.getpid()}.tmp"
    planted_tmp.symlink_to(victim)
    write_atomic(target, b"{}\n")
    assert target.read_bytes() == b"{}\n" and not planted_tmp.exists() and not planted_tmp.is_symlink()
    victim.unchanged()


def test_open_job_file_refuses_what_is_not_a_regular_file_of_ours(tmp_path, victim):
    from hbwrap.errors import StateError
    from hbwrap.jobstore import open_job_file

    link = tmp_path / "link"
    link.symlink_to(victim)
    with pytest.raises(StateError, match="symbolic link"):
        open_job_file(link, os.O_WRONLY | os.O_TRUNC)
    hard = tmp_path / "hard"
    os.link(victim, hard)
    with pytest.raises(StateError, match="hard link"):
        open_job_file(hard, os.O_WRONLY | os.O_TRUNC)  # refused before anything is truncated
    victim.unchanged()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StateError, match="not a regular file"):
        open_job_file(fifo, os.O_RDONLY)  # and without blocking on the open
    theirs = tmp_path / "theirs"
    theirs.write_text("x")
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(StateError, match=f"uid {OTHER_UID}"):
        open_job_file(theirs, os.O_RDONLY)
    fd = open_job_file(tmp_path / "new", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, b"ok")
        assert os.get_blocking(fd) and os.get_inheritable(fd) is False
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError):
        open_job_file(tmp_path / "absent", os.O_RDONLY)
