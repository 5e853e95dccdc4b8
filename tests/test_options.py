"""Option parsing: the parsers of hbwrap.options, and bad input through the real binary (exit 2, one clear line)."""
import re
import signal

import pytest

from hbwrap.errors import UsageError
from hbwrap.model import RestartMode
from hbwrap.options import (DEFAULT_PROGRESS_PATTERN, build_run_options, check_name, compile_pattern,
                            default_name, parse_duration, parse_exit_codes, parse_signal, parse_size)

# --- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("90", 90.0), ("1.5", 1.5), ("0", 0.0), (".5", 0.5), ("250ms", 0.25), ("90s", 90.0), ("15m", 900.0),
    ("2h", 7200.0), ("1d", 86400.0), ("1h30m", 5400.0), ("1m30s", 90.0), ("1.5s", 1.5), ("2m500ms", 120.5),
    ("1d2h3m4s5ms", 86400 + 7200 + 180 + 4 + 0.005), (" 10s ", 10.0), ("10S", 10.0), (3, 3.0), (0.25, 0.25),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text, "--timeout") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "-1", "-1s", "5x", "", " ", "1h30", "s", "1..5", "1.5.5s", "ms", "1e3",
                                  "inf", "nan", "1 h", "10sec", -1, float("inf"), float("nan"), True])
def test_parse_duration_rejects(text):
    with pytest.raises(UsageError) as info:
        parse_duration(text, "--response-timeout")
    assert "--response-timeout" in str(info.value)


# --- sizes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [
    ("4096", 4096), ("1", 1), ("10MB", 10_000_000), ("10mb", 10_000_000), ("1GB", 1_000_000_000),
    ("500KiB", 512_000), ("1MiB", 1 << 20), ("2k", 2000), ("1.5KB", 1500), ("100B", 100), (2048, 2048),
])
def test_parse_size(text, size):
    assert parse_size(text, "--log-max-size") == size


@pytest.mark.parametrize("text", ["", "0", "0MB", "-5", "-5MB", "10XB", "MB", "lots", "1.5.5MB", "0.1"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError) as info:
        parse_size(text, "--log-max-size")
    assert "--log-max-size" in str(info.value)


# --- signals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, sig", [
    ("TERM", signal.SIGTERM), ("SIGTERM", signal.SIGTERM), ("term", signal.SIGTERM), ("sigterm", signal.SIGTERM),
    ("9", signal.SIGKILL), ("KILL", signal.SIGKILL), ("INT", signal.SIGINT), ("hup", signal.SIGHUP),
    ("USR1", signal.SIGUSR1), ("15", signal.SIGTERM), (" QUIT ", signal.SIGQUIT),
])
def test_parse_signal(text, sig):
    assert parse_signal(text, "--kill-signal") == int(sig)


@pytest.mark.parametrize("text", ["FOO", "SIGFOO", "0", "999", "-9", "", "SIG", "SIG_DFL", "SIG_IGN", "9.0", "TERM9"])
def test_parse_signal_rejects(text):
    with pytest.raises(UsageError) as info:
        parse_signal(text, "--kill-signal")
    assert "--kill-signal" in str(info.value)


# --- names, patterns, exit codes -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "reddit-3am", "job_1.2", "A" * 64, "x.y-z_0", "..a"])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "bad name", "a/b", "A" * 65, ".", "..", "job!", "tab\tname", "ünï", "a\nb"])
def test_invalid_names(name):
    with pytest.raises(UsageError) as info:
        check_name(name)
    assert "--name" in str(info.value)


def test_default_name_is_stable_valid_and_distinguishes_command_lines():
    a = default_name(["/usr/bin/python3", "research.py", "--fast"])
    assert a == default_name(["/usr/bin/python3", "research.py", "--fast"])
    assert a != default_name(["/usr/bin/python3", "research.py", "--slow"])
    assert a != default_name(["/usr/bin/python3", "research.py --fast"])  # argv boundaries count
    for cmd in (["/usr/bin/python3", "x"], ["./weird name!.sh"], ["..."], ["x" * 300], ["\udcff"]):
        check_name(default_name(cmd))


def test_regex_errors_name_the_option():
    with pytest.raises(UsageError, match="--fatal-pattern"):
        compile_pattern("(unclosed", "--fatal-pattern")
    assert compile_pattern(DEFAULT_PROGRESS_PATTERN, "--progress-pattern").search("checkpoint: page-4").group(1) == "page-4"


@pytest.mark.parametrize("text, codes", [("1", (1,)), ("1,2,75", (1, 2, 75)), (" 1, 2 ", (1, 2)), ("255", (255,))])
def test_parse_exit_codes(text, codes):
    assert parse_exit_codes(text, "--retry-exit-codes") == codes


@pytest.mark.parametrize("text", ["", "0", "256", "1,,2", "1,x", "-1", "1;2", "one"])
def test_parse_exit_codes_rejects(text):
    with pytest.raises(UsageError, match="--retry-exit-codes"):
        parse_exit_codes(text, "--retry-exit-codes")


# --- build_run_options -----------------------------------------------------------------------------

def build(**kw):
    kw.setdefault("command", ["true"])
    kw.setdefault("name", None)
    kw.setdefault("state_dir", "/tmp/hbwrap-test-state")
    return build_run_options(**kw)


def test_build_run_options_defaults():
    o = build()
    assert o.command == ("true",)
    assert o.restart is RestartMode.ON_STALL
    assert (o.max_restarts, o.backoff_s, o.backoff_max_s, o.grace_s) == (3, 1.0, 300.0, 10.0)
    assert (o.probe_interval_s, o.probe_timeout_s, o.probe_failures) == (30.0, 10.0, 3)
    assert o.kill_signal == signal.SIGTERM
    assert o.progress_patterns == (DEFAULT_PROGRESS_PATTERN,)
    assert o.log_max_size == 50_000_000 and o.lease_s == 30.0
    assert o.timeout_s is o.deadline_s is o.response_timeout_s is o.progress_timeout_s is None
    assert o.start_grace_s == 0 and o.resume and o.retry_exit_codes is None


def test_build_run_options_parses_everything():
    o = build(name="j", timeout="1m", deadline="1h30m", response_timeout="250ms", progress_timeout="2", start_grace="1s",
              kill_signal="INT", grace="500ms", restart="on-failure", max_restarts="7", backoff="2s",
              backoff_max="1m", retry_exit_codes="1,75", fatal_pattern=["suspended"], log_max_size="10MB",
              progress_pattern=[r"page (\d+)"])
    assert (o.timeout_s, o.deadline_s, o.response_timeout_s, o.progress_timeout_s) == (60.0, 5400.0, 0.25, 2.0)
    assert (o.start_grace_s, o.grace_s, o.kill_signal) == (1.0, 0.5, signal.SIGINT)
    assert (o.restart, o.max_restarts, o.backoff_s, o.backoff_max_s) == (RestartMode.ON_FAILURE, 7, 2.0, 60.0)
    assert o.retry_exit_codes == (1, 75) and o.fatal_patterns == ("suspended",)
    assert o.log_max_size == 10_000_000 and o.progress_patterns == (r"page (\d+)",)


@pytest.mark.parametrize("kw, option", [
    ({"command": []}, "command"),
    ({"name": "no spaces"}, "--name"),
    ({"timeout": "soon"}, "--timeout"),
    ({"deadline": "-3"}, "--deadline"),
    ({"grace": "1y"}, "--grace"),
    ({"restart": "always"}, "--restart"),
    ({"max_restarts": "-1"}, "--max-restarts"),
    ({"max_restarts": "2.5"}, "--max-restarts"),
    ({"probe_failures": "0"}, "--probe-failures"),
    ({"probe_interval": "0"}, "--probe-interval"),
    ({"probe": "   "}, "--probe"),
    ({"kill_signal": "NOPE"}, "--kill-signal"),
    ({"progress_pattern": ["("]}, "--progress-pattern"),
    ({"fatal_pattern": ["ok", "[z-a]"]}, "--fatal-pattern"),
    ({"retry_exit_codes": "1,0"}, "--retry-exit-codes"),
    ({"log_max_size": "big"}, "--log-max-size"),
    ({"lease": "0"}, "--lease"),
    ({"checkpoint_file": "/nonexistent-dir-hbwrap/cp"}, "--checkpoint-file"),
    ({"heartbeat_file": "/"}, "--heartbeat-file"),
])
def test_build_run_options_errors_name_the_option(kw, option):
    with pytest.raises(UsageError) as info:
        build(**kw)
    assert option in str(info.value)


# --- the real binary -------------------------------------------------------------------------------

# The table of bad values for every option and command is tests/test_bad_input.py.


def assert_one_line_usage_error(r, option):
    assert r.returncode == 2, r
    assert "Traceback" not in r.err, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r
    assert lines[0].startswith("hbwrap:"), r
    assert option in lines[0], r
    assert r.out == "", r


@pytest.mark.parametrize("args", [["run"], ["run", "--"], ["run", "--name", "x"], ["run", "--name", "x", "--"]])
def test_missing_command_is_a_usage_error(hb, args):
    r = hb.run(*args)
    assert_one_line_usage_error(r, "command")


def test_unknown_option_is_a_usage_error(hb):
    r = hb.run("run", "--no-such-option", "--", "true")
    assert_one_line_usage_error(r, "--no-such-option")


@pytest.mark.parametrize("args, what", [(["checkpoint", "x"], "HBWRAP_CHECKPOINT_FILE"), (["beat"], "HBWRAP_HEARTBEAT_FILE")])
def test_inside_only_commands_outside_hbwrap(hb, args, what):
    r = hb.run(*args)
    assert r.returncode == 2, r
    assert "Traceback" not in r.err
    assert r.err.startswith("hbwrap:") and what in r.err, r


@pytest.mark.parametrize("args", [["status", "nosuchjob"], ["status", "nosuchjob", "--json"], ["events", "nosuch"],
                                  ["events", "nosuch", "--json"], ["logs", "nosuch"], ["watch", "nosuch"]])
def test_unknown_job_exits_1(hb, args):
    r = hb.run(*args)
    assert r.returncode == 1, r
    assert "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hbwrap:") and "nosuch" in lines[0], r


def test_status_without_jobs(hb):
    r = hb.run("status", "--json")
    assert r.returncode == 0, r
    assert r.out.strip() == "[]"


def test_version(hb):
    r = hb.run("--version")
    assert r.returncode == 0, r
    assert re.fullmatch(r"hbwrap \d+\.\d+\.\d+\S*\n", r.out), r


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["status", "--help"], ["checkpoint", "--help"]])
def test_help(hb, args):
    r = hb.run(*args)
    assert r.returncode == 0, r
    assert "Usage" in r.out and "Traceback" not in r.err


def test_no_arguments_prints_the_help_and_exits_2_without_an_empty_error_line(hb):
    r = hb.run()
    assert r.returncode == 2, r
    assert "Usage" in r.out + r.err and "Traceback" not in r.err
    assert "error:" not in r.err, r


def test_unusable_state_dir_is_125(hb):
    afile = hb.tmp / "not-a-dir"
    afile.write_text("")
    marker = hb.path("ran")
    r = hb.run("run", "--", "sh", "-c", f"touch {marker}", env={**hb.env, "HBWRAP_STATE_DIR": str(afile)})
    assert r.returncode == 125, r
    assert "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hbwrap:") and str(afile) in lines[0], r
    assert not (hb.tmp / "ran").exists()


def test_state_dir_option_overrides_the_environment(hb):
    other = hb.tmp / "other-state"
    r = hb.run("run", "--state-dir", str(other), "--name", "where", "--", "true")
    assert r.returncode == 0, r
    assert (other / "where" / "state.json").exists()
    assert not (hb.state_dir / "where").exists()


# every option SPEC §3 names, each with a valid value: all of them must be accepted
SPEC_RUN_OPTIONS = [
    "--name", "spec-job", "--timeout", "10s", "--deadline", "1m", "--response-timeout", "30s",
    "--progress-timeout", "1m", "--start-grace", "0", "--progress-pattern", r"^step (\d+)",
    "--checkpoint-file", "{tmp}/cp", "--heartbeat-file", "{tmp}/hb", "--probe", "true", "--probe-interval", "30s",
    "--probe-timeout", "10s", "--probe-failures", "3", "--kill-signal", "SIGTERM", "--grace", "1s",
    "--restart", "on-failure", "--max-restarts", "2", "--backoff", "1s", "--backoff-max", "5m",
    "--retry-exit-codes", "1,2,75", "--fatal-pattern", "account suspended", "--resume", "--if-running", "fail",
    "--lease", "30s", "--quiet", "--pty", "--log-max-size", "10MB",
]


def test_every_spec_run_option_is_accepted(hb):
    args = [a.replace("{tmp}", str(hb.tmp)) for a in SPEC_RUN_OPTIONS]
    r = hb.run("run", *args, "--", "sh", "-c", "echo step 1", hb.tag)
    assert r.returncode == 0, r
    assert hb.status("spec-job")[0]["checkpoint"] == "1"


ALERT_OPTIONS = [
    ["--alert-cmd", "true"],
    ["--alert-webhook", "http://127.0.0.1:9/hook"],
    ["--alert-webhook", "http://127.0.0.1:9/hook", "--webhook-format", "slack"],
    ["--alert-on", "all"],
    ["--ping-url", "http://127.0.0.1:9/ping"],
]


@pytest.mark.parametrize("args", ALERT_OPTIONS, ids=[a[-2] for a in ALERT_OPTIONS])
def test_alert_options_are_accepted(hb, args):
    r = hb.run("run", "--name", "alerts", *args, "--", "true", timeout=30)
    assert r.returncode == 0, r
