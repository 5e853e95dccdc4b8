"""Huge but well-formed values (durations, sizes, counts) are refused at parse time, never a traceback."""
import pytest

from hbwrap.errors import UsageError
from hbwrap.options import (MAX_COUNT, MAX_DURATION_S, MAX_SIZE, parse_count, parse_duration, parse_exit_codes,
                            parse_signal, parse_size)

DURATION_OPTIONS = ["--timeout", "--deadline", "--response-timeout", "--progress-timeout", "--start-grace",
                    "--probe-interval", "--probe-timeout", "--grace", "--backoff", "--backoff-max", "--lease"]
HUGE_DURATIONS = ["3000000d", "99999999999999999999d", "9" * 400, "9" * 400 + "ms", "36501d", "1d" * 40000,
                  str(10 ** 30)]


# --- the parsers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", HUGE_DURATIONS + [10 ** 400, 10 ** 12, 1e300], ids=lambda v: repr(v)[:30])
def test_huge_durations_are_refused_naming_the_option(value):
    with pytest.raises(UsageError) as info:
        parse_duration(value, "--deadline")
    assert str(info.value).startswith("--deadline: ") and "too large" in str(info.value)


def test_the_maximum_duration_itself_is_accepted():
    assert MAX_DURATION_S == 36500 * 86400
    assert parse_duration("36500d", "--timeout") == MAX_DURATION_S
    assert parse_duration(str(MAX_DURATION_S), "--timeout") == MAX_DURATION_S
    assert parse_duration(MAX_DURATION_S, "--timeout") == MAX_DURATION_S


@pytest.mark.parametrize("text", ["١٢", "٣s", "²", "1²s"])
def test_durations_are_ascii_digits_only(text):
    with pytest.raises(UsageError, match="--grace: invalid duration"):
        parse_duration(text, "--grace")


@pytest.mark.parametrize("value", ["9" * 400 + "TB", "2PiB", str(10 ** 20), 10 ** 400, MAX_SIZE + 1],
                         ids=lambda v: repr(v)[:30])
def test_huge_sizes_are_refused(value):
    with pytest.raises(UsageError) as info:
        parse_size(value, "--log-max-size")
    assert str(info.value).startswith("--log-max-size: ") and "too large" in str(info.value)


def test_the_maximum_size_itself_is_accepted():
    assert parse_size("1PiB", "--log-max-size") == MAX_SIZE == 2 ** 50


@pytest.mark.parametrize("value", ["9" * 30, "9" * 5000, str(MAX_COUNT + 1), 10 ** 400], ids=lambda v: repr(v)[:30])
def test_huge_counts_are_refused(value):
    with pytest.raises(UsageError) as info:
        parse_count(value, "--max-restarts")
    assert str(info.value).startswith("--max-restarts: ") and "too large" in str(info.value)


@pytest.mark.parametrize("value", ["²", "١", "1²", "٣"])
def test_counts_signals_and_exit_codes_are_ascii_digits_only(value):
    with pytest.raises(UsageError, match="--max-restarts"):
        parse_count(value, "--max-restarts")
    with pytest.raises(UsageError, match="--kill-signal"):
        parse_signal(value, "--kill-signal")
    with pytest.raises(UsageError, match="--retry-exit-codes"):
        parse_exit_codes(value, "--retry-exit-codes")


@pytest.mark.parametrize("value", ["9" * 5000, "1," + "9" * 30, "0" * 5000 + "1"])
def test_huge_exit_codes_are_refused(value):
    with pytest.raises(UsageError, match="--retry-exit-codes"):
        parse_exit_codes(value, "--retry-exit-codes")


def test_huge_signal_number_is_refused():
    with pytest.raises(UsageError, match="--kill-signal"):
        parse_signal("9" * 5000, "--kill-signal")


# --- the real binary -------------------------------------------------------------------------------

def one_line_error(r, code, *needles):
    assert r.returncode == code, r
    assert "Traceback" not in r.err, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hbwrap:"), r
    for needle in needles:
        assert needle in lines[0], r


# huge values of every `run` option on the command line: tests/test_bad_input.py


@pytest.mark.parametrize("value", ["3000000d", "99999999999999999999d", "9" * 400])
def test_stop_timeout_huge(hb, value):
    r = hb.run("run", "--name", "j", "--", "true")
    assert r.returncode == 0, r
    one_line_error(hb.run("stop", "j", "--timeout", value), 2, "--timeout")


@pytest.mark.parametrize("value", ["3000000d", "99999999999999999999d"])
def test_config_show_refuses_huge_flags(hb, value):
    one_line_error(hb.run("config", "show", "--deadline", value), 2, "--deadline")


TOML_HUGE = [(key, raw) for key in [o[2:] for o in DURATION_OPTIONS] for raw in ("99999999999999999999999", "1e300")] + [
    ("timeout", "1e400"), ("deadline", "9223372036854775807"), ("lease", '"3000000d"'), ("grace", '"36501d"'),
    ("max-restarts", "9223372036854775807"), ("probe-failures", "99999999999999999999999"),
    ("log-max-size", "99999999999999999999999"), ("log-max-size", '"9999999999999999999999TB"'),
    ("retry-exit-codes", "[99999999999999999999999]"), ("kill-signal", "99999999999999999999999"),
]


@pytest.mark.parametrize("key, raw", TOML_HUGE, ids=[f"{k}={v[:20]}" for k, v in TOML_HUGE])
def test_huge_values_in_the_config_file_name_file_line_and_key(hb, key, raw):
    config = hb.tmp / "config.toml"
    config.write_text(f"[defaults]\ngrace = \"1s\"\n\n[jobs.big]\ncommand = [\"true\"]\n{key} = {raw}\n")
    r = hb.run("run", "--config", str(config), "--name", "big")
    one_line_error(r, 125, f"{config}:6:", key)
    assert not (hb.state_dir / "big").exists()


def test_durations_at_the_maximum_run_fine(hb):
    """The largest accepted values of every duration (but --grace: see below) supervise normally."""
    top = "36500d"
    args = [a for opt in DURATION_OPTIONS if opt != "--grace" for a in (opt, top)]
    r = hb.run("run", "--name", "top", *args, "--probe", "true", "--",
               "sh", "-c", f"echo hi; sleep 1.5; echo bye {hb.tag}", timeout=30)
    assert r.returncode == 0, r
    assert r.out == f"hi\nbye {hb.tag}\n"
    assert "Traceback" not in r.err and r.err == "", r
    assert hb.status("top")[0]["status"] == "succeeded"


def test_a_huge_grace_still_stops_the_command(hb):
    r = hb.run("run", "--name", "g", "--grace", "36500d", "--response-timeout", "0.3", "--restart", "never", "--",
               "sh", "-c", "trap '' TERM; echo hi; sleep 2", hb.tag, timeout=30)
    assert r.returncode == 124, r
    keeper_err = hb.job_dir("g") / "keeper.err"
    assert not keeper_err.exists() or "Traceback" not in keeper_err.read_text()
    assert "exit" in [e["event"] for e in hb.events("g")]
    assert hb.events("g")[-1]["event"] == "escalate"
