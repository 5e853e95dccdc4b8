"""The bad-input table: every `run` option and every command with malformed values, through the real binary.

Each case gives its documented exit code (2 for usage errors, 125 for an unusable file or directory) and
exactly one `hbwrap:` line on stderr; never a traceback, never the command run, never a job created.
"""
import os

import pytest
import typer

from hbwrap import cli

ROOT = typer.main.get_command(cli.app)
RUN_OPTIONS = {opt for p in ROOT.commands["run"].params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")}
COMMANDS = set(ROOT.commands) | {f"config {c}" for c in ROOT.commands["config"].commands}

HUGE = "99999999999999999999d"
DURATIONS = ["--timeout", "--deadline", "--response-timeout", "--progress-timeout", "--start-grace",
             "--probe-interval", "--probe-timeout", "--grace", "--backoff", "--backoff-max", "--lease"]

# (option, value or None for "no value given", expected exit code)
RUN_CASES = [
    *[(opt, bad, 2) for opt in DURATIONS for bad in ("soon", "-1", "nan", "3000000d", HUGE, None)],
    ("--timeout", "5x", 2), ("--deadline", "1h30", 2), ("--response-timeout", "", 2), ("--grace", "1e3", 2),
    ("--backoff", "inf", 2), ("--lease", "0", 2), ("--probe-interval", "0", 2), ("--start-grace", "١٢", 2),
    ("--name", "a/b", 2), ("--name", "..", 2), ("--name", "", 2), ("--name", "x" * 65, 2), ("--name", None, 2),
    ("--state-dir", "{tmp}/afile/state", 125), ("--state-dir", "{tmp}/afile", 125), ("--state-dir", None, 2),
    ("--progress-pattern", "(unclosed", 2), ("--progress-pattern", "a{2,1}", 2), ("--progress-pattern", None, 2),
    ("--checkpoint-file", "{tmp}", 2), ("--checkpoint-file", "{tmp}/no/such/dir/cp", 2),
    ("--heartbeat-file", "/", 2), ("--heartbeat-file", "{tmp}/no/such/dir/hb", 2),
    ("--probe", "   ", 2), ("--probe", None, 2),
    ("--probe-failures", "0", 2), ("--probe-failures", "-2", 2), ("--probe-failures", "x", 2),
    ("--probe-failures", "9" * 40, 2),
    ("--kill-signal", "FOO", 2), ("--kill-signal", "0", 2), ("--kill-signal", "999", 2), ("--kill-signal", "SIG", 2),
    ("--kill-signal", "9" * 5000, 2), ("--kill-signal", "²", 2),
    ("--restart", "always", 2), ("--restart", "", 2),
    ("--max-restarts", "-1", 2), ("--max-restarts", "2.5", 2), ("--max-restarts", "9" * 40, 2),
    ("--max-restarts", "²", 2), ("--max-restarts", None, 2),
    ("--retry-exit-codes", "1,x", 2), ("--retry-exit-codes", "0", 2), ("--retry-exit-codes", "256", 2),
    ("--retry-exit-codes", "", 2), ("--retry-exit-codes", "9" * 5000, 2),
    ("--fatal-pattern", "[unclosed", 2), ("--fatal-pattern", "(?P<x", 2),
    ("--resume", "=yes", 2), ("--no-resume", "=1", 2), ("--quiet", "=yes", 2), ("--verbose", "=1", 2),
    ("--pty", "=on", 2), ("--help", "=x", 2), ("--self-heal", "=no", 2), ("--no-self-heal", "=1", 2),
    ("--restart-check", " ", 2), ("--restart-approval", "soon", 2), ("--restart-approval", "0", 2),
    ("--restart-approval", "36501d", 2), ("--approval-default", "maybe", 2), ("--activity", "gpu", 2),
    ("--repeat-timeout", "-1s", 2), ("--dump-signal", "SIGNOPE", 2), ("--dump-wait", "1x", 2),
    ("--retry-after-pattern", "(", 2), ("--lease-url", "http://db/x", 2), ("--host", "a b", 2),
    ("--log-max-size", "10XB", 2), ("--log-max-size", "0", 2), ("--log-max-size", "1e400", 2),
    ("--log-max-size", "9" * 400 + "TB", 2), ("--log-max-size", "-5MB", 2),
    ("--alert-cmd", "", 2), ("--alert-cmd", "  ", 2),
    ("--alert-webhook", "ftp://example.org/x", 2), ("--alert-webhook", "not a url", 2),
    ("--alert-webhook", "http://", 2), ("--alert-webhook", None, 2),
    ("--webhook-format", "xml", 2), ("--webhook-format", "", 2),
    ("--alert-on", "stal", 2), ("--alert-on", "", 2), ("--alert-on", "alert_output", 2),
    ("--ping-url", "http://", 2), ("--ping-url", "mailto:x@example.org", 2),
    ("--config", "{tmp}/no-such.toml", 125), ("--config", "{tmp}", 125), ("--config", "{tmp}/bad.toml", 125),
    ("--if-running", "maybe", 2), ("--if-running", "", 2),
    ("--no-such-option", "x", 2),
]


def run_args(option, value):
    if value is None:
        return ["run", option]  # the option's value is missing
    if value.startswith("="):
        return ["run", option + value, "--", "true"]
    return ["run", option, value, "--", "true"]


COMMAND_CASES = [
    # (command, argv, exit code, a word the one line must hold)
    ("run", ["run"], 2, "command"),
    ("run", ["run", "--name", "x", "--"], 2, "command"),
    ("status", ["status", "../other"], 2, "invalid job name"),
    ("status", ["status", "a", "b"], 2, "unexpected extra argument"),
    ("status", ["status", "--watch"], 2, "--watch"),
    ("status", ["status", "--jsn"], 2, "--jsn"),
    ("status", ["status", "--state-dir"], 2, "--state-dir"),
    ("status", ["status", "--state-dir", "{tmp}/afile"], 125, "not a directory"),
    ("events", ["events"], 2, "name"),
    ("events", ["events", "a/b"], 2, "invalid job name"),
    ("events", ["events", "j", "-n", "-1"], 2, "-n"),
    ("events", ["events", "j", "-n", "many"], 2, "-n"),
    ("events", ["events", "j", "--follow=yes"], 2, "--follow"),
    ("logs", ["logs"], 2, "name"),
    ("logs", ["logs", ".."], 2, "invalid job name"),
    ("logs", ["logs", "j", "-n", "-5"], 2, "-n"),
    ("logs", ["logs", "j", "--lines", "9" * 5000], 2, "--lines"),
    ("incident", ["incident"], 2, "name"),
    ("incident", ["incident", "../x"], 2, "invalid job name"),
    ("incident", ["incident", "ok", "--attempt", "0"], 2, "attempt"),
    ("incident", ["incident", "ok", "--attempt", "x"], 2, "attempt"),
    ("watch", ["watch"], 2, "name"),
    ("watch", ["watch", "../../etc"], 2, "invalid job name"),
    ("watch", ["watch", "x" * 65], 2, "invalid job name"),
    ("stop", ["stop"], 2, "name"),
    ("stop", ["stop", "../.."], 2, "invalid job name"),
    ("stop", ["stop", "j", "--timeout", "soon"], 2, "--timeout"),
    ("stop", ["stop", "j", "--timeout", HUGE], 2, "--timeout"),
    ("stop", ["stop", "j", "--timeout"], 2, "--timeout"),
    ("approve", ["approve"], 2, "name"),
    ("approve", ["approve", "a/b"], 2, "invalid job name"),
    ("approve", ["approve", "j", "extra"], 2, "unexpected extra argument"),
    ("approve", ["approve", "j"], 1, "no job named"),
    ("approve", ["approve", "j", "--state-dir", "{tmp}/afile"], 125, "not a directory"),
    ("deny", ["deny"], 2, "name"),
    ("deny", ["deny", ".."], 2, "invalid job name"),
    ("deny", ["deny", "j", "--yes"], 2, "--yes"),
    ("deny", ["deny", "j"], 1, "no job named"),
    ("checkpoint", ["checkpoint"], 2, "value"),
    ("checkpoint", ["checkpoint", "page-1"], 2, "HBWRAP_CHECKPOINT_FILE"),
    ("checkpoint", ["checkpoint", "a\nb", "+env"], 2, "single line"),
    ("checkpoint", ["checkpoint", "page-1", "+env-dir"], 125, "checkpoint file"),
    ("beat", ["beat"], 2, "HBWRAP_HEARTBEAT_FILE"),
    ("beat", ["beat", "extra"], 2, "unexpected extra argument"),
    ("beat", ["beat", "+env-dir"], 125, "heartbeat file"),
    ("metrics", ["metrics", "--output"], 2, "--output"),
    ("metrics", ["metrics", "--output", "{tmp}/no/such/dir/hbwrap.prom"], 125, "cannot write metrics"),
    ("metrics", ["metrics", "--format", "json"], 2, "--format"),
    ("config show", ["config", "show", "--timeout", "soon"], 2, "--timeout"),
    ("config show", ["config", "show", "--deadline", HUGE], 2, "--deadline"),
    ("config show", ["config", "show", "--kill-signal", "FOO"], 2, "--kill-signal"),
    ("config show", ["config", "show", "--name", "../x"], 2, "--name"),
    ("config show", ["config", "show", "--config", "{tmp}/bad.toml"], 125, "bad.toml"),
    ("config init", ["config", "init", "{tmp}"], 125, "is a directory"),
    ("config init", ["config", "init", "{tmp}/bad.toml"], 125, "already exists"),
    ("config init", ["config", "init", "a", "b"], 2, "unexpected extra argument"),
    ("config", ["config", "frobnicate"], 2, "frobnicate"),
    ("hbwrap", ["frobnicate"], 2, "frobnicate"),
]


@pytest.fixture
def bad_env(hb):
    """A state dir, a plain file `afile`, an invalid config file `bad.toml`.

    Every case with a job name is refused before the job is looked up, so no job `j` needs to exist.
    """
    hb.state_dir.mkdir(mode=0o700)
    (hb.tmp / "afile").write_text("not a directory\n")
    (hb.tmp / "bad.toml").write_text("[defaults]\ntimeout = \"soon\"\n")
    return hb


def check(hb, argv, code, needle=None):
    env = dict(hb.env)
    argv = [a.replace("{tmp}", str(hb.tmp)) for a in argv]
    if argv and argv[-1] in ("+env", "+env-dir"):  # as if inside a supervised command
        target = hb.tmp if argv.pop() == "+env-dir" else hb.tmp / "cp"
        env.update(HBWRAP_CHECKPOINT_FILE=str(target), HBWRAP_HEARTBEAT_FILE=str(target))
    jobs_before = sorted(os.listdir(hb.state_dir))
    r = hb.run(*argv, env=env, timeout=30)
    assert r.returncode == code, r
    assert "Traceback" not in r.err, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hbwrap:"), r
    if needle:
        assert needle.lower() in lines[0].lower(), r
    assert r.out == "", r
    assert sorted(os.listdir(hb.state_dir)) == jobs_before, "a bad invocation created a job"
    return r


@pytest.mark.parametrize("option, value, code", RUN_CASES, ids=[f"{o}={v!r:.24}" for o, v, _ in RUN_CASES])
def test_bad_run_option(bad_env, option, value, code):
    argv = run_args(option, value)
    if argv[-1] == "true":
        argv[-1:] = ["sh", "-c", f"touch {bad_env.path('ran')}"]
    needle = None if option == "--state-dir" and code == 125 else option.lstrip("=")
    if option == "--config":
        needle = "config" if "bad" not in value else "bad.toml"
    check(bad_env, argv, code, needle)
    assert not (bad_env.tmp / "ran").exists(), "the command must not run after an error"


@pytest.mark.parametrize("command, argv, code, needle", COMMAND_CASES,
                         ids=[f"{' '.join(a)[:40]}" for _, a, _, _ in COMMAND_CASES])
def test_bad_command_input(bad_env, command, argv, code, needle):
    check(bad_env, argv, code, needle)


def test_the_table_covers_every_run_option_and_every_command():
    assert RUN_OPTIONS - {o for o, _, _ in RUN_CASES} == set()
    assert COMMANDS - {c for c, _, _, _ in COMMAND_CASES} == set()


def test_config_without_a_subcommand_prints_its_help(hb):
    r = hb.run("config")
    assert r.returncode == 2, r
    assert "Usage" in r.out + r.err and "Traceback" not in r.err
