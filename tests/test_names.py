"""Every command that takes a job NAME validates it like `run --name`: exit 2 when malformed, 1 when unknown."""
import pytest

COMMANDS = [["status"], ["status", "--json"], ["events"], ["events", "--json"], ["logs"], ["watch"], ["stop"]]
MALFORMED = ["..", "../other/seed", "a/b", "", "x" * 65, ".", "bad name", "/etc"]


@pytest.fixture
def planted(hb):
    """A real job `seed` in the state dir, and a foreign `seed` job one level up (what traversal would reach)."""
    r = hb.run("run", "--name", "seed", "--", "sh", "-c", "echo hello-from-seed")
    assert r.returncode == 0, r
    foreign = hb.tmp / "other" / "seed"
    foreign.mkdir(parents=True)
    (foreign / "events.jsonl").write_bytes((hb.job_dir("seed") / "events.jsonl").read_bytes())
    (hb.tmp / "output.log").write_text("outside the state dir\n")
    return hb


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_malformed_name_is_a_usage_error(planted, command):
    hb = planted
    wrong = {}
    for name in MALFORMED:  # `..` is the state dir's parent, which holds an output.log and other/seed
        r = hb.run(command[0], name, *command[1:], timeout=20)
        lines = r.err.strip().splitlines()
        if (r.returncode != 2 or "Traceback" in r.err or r.out or len(lines) != 1
                or not lines[0].startswith("hbwrap:") or "invalid job name" not in lines[0]):
            wrong[name] = r
    assert not wrong, wrong


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_well_formed_unknown_name_exits_1(planted, command):
    r = planted.run(command[0], "nosuchjob", *command[1:], timeout=20)
    assert r.returncode == 1, r
    assert "Traceback" not in r.err, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hbwrap:") and "nosuchjob" in lines[0], r


def test_status_lists_only_jobs_with_valid_names(planted):
    (planted.state_dir / "not a job").mkdir()
    rows = planted.status()
    assert [r["name"] for r in rows] == ["seed"]
