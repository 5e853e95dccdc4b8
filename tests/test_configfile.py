"""The config file: discovery, precedence, every error class with file/line/key, config show TOML, config init."""
import inspect
import os
import stat
import tomllib

import pytest

from hbwrap import config_write as cw
from hbwrap import configfile as cf
from hbwrap.errors import ConfigError, ExitCode, UsageError
from hbwrap.options import DEFAULT_PROGRESS_PATTERN, build_run_options


BUILD_ARGS = set(inspect.signature(build_run_options).parameters)


def run_options(settings, **extra):
    """RunOptions from merged settings, as `hbwrap run` builds them."""
    kwargs = {k.replace("-", "_"): v for k, v in settings.items() if k.replace("-", "_") in BUILD_ARGS}
    return build_run_options(**{**kwargs, **extra})


def write(tmp_path, text, name="config.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cf.load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == ExitCode.INTERNAL == 125
    return path, message


# ----------------------------------------------------------------------------------------------- precedence

PRECEDENCE = """\
[defaults]
timeout = "1h"
grace = "20s"
max-restarts = 5
fatal_pattern = ["from-defaults"]

[jobs.scraper]
command = ["python3", "scrape.py", "--all"]
timeout = "30m"
response_timeout = "2m"
fatal-pattern = ["from-job"]
pty = true
"""


def test_precedence_flags_over_job_over_defaults_over_builtin(tmp_path):
    path = write(tmp_path, PRECEDENCE)
    config = cf.load_config(path)
    flags = {"timeout": "5m", "response-timeout": None, "quiet": None, "progress_pattern": []}
    settings, origins = cf.effective_settings(config, "scraper", flags)
    assert settings["timeout"] == "5m" and origins["timeout"] == "flag"
    assert settings["response-timeout"] == "2m" and origins["response-timeout"] == f"{path}:[jobs.scraper]"
    assert settings["fatal-pattern"] == ["from-job"]  # a job's list replaces the defaults' list
    assert settings["grace"] == "20s" and origins["grace"] == f"{path}:[defaults]"
    assert settings["max-restarts"] == 5
    assert settings["kill-signal"] == "TERM" and origins["kill-signal"] == "default"
    assert settings["progress-pattern"] == [DEFAULT_PROGRESS_PATTERN] and origins["progress-pattern"] == "default"
    assert settings["quiet"] is False and origins["quiet"] == "default"
    assert settings["pty"] is True
    assert settings["command"] == ["python3", "scrape.py", "--all"]
    assert settings["deadline"] is None and origins["deadline"] == "default"
    assert set(settings) == set(cf.RUN_KEYS) == set(origins)


def test_precedence_for_another_job_and_without_config(tmp_path):
    config = cf.load_config(write(tmp_path, PRECEDENCE))
    settings, origins = cf.effective_settings(config, "other", {})
    assert settings["timeout"] == "1h" and settings["command"] is None
    assert settings["fatal-pattern"] == ["from-defaults"]
    settings, origins = cf.effective_settings(None, "scraper", {"grace": "1s"})
    assert settings["grace"] == "1s" and origins["grace"] == "flag"
    assert all(o in ("flag", "default") for o in origins.values())


def test_bool_flags_override_the_file(tmp_path):
    config = cf.load_config(write(tmp_path, "[jobs.j]\nresume = false\nquiet = true\n"))
    settings, origins = cf.effective_settings(config, "j", {"resume": True, "quiet": False})
    assert settings["resume"] is True and settings["quiet"] is False and origins["quiet"] == "flag"


def test_settings_feed_build_run_options(tmp_path):
    config = cf.load_config(write(tmp_path, PRECEDENCE))
    settings, _ = cf.effective_settings(config, "scraper", {"state_dir": str(tmp_path / "state")})
    opts = run_options(settings, name="scraper")
    assert opts.command == ("python3", "scrape.py", "--all")
    assert opts.timeout_s == 1800 and opts.response_timeout_s == 120 and opts.grace_s == 20
    assert opts.max_restarts == 5 and opts.pty and opts.fatal_patterns == ("from-job",)


def test_dashes_and_underscores_are_the_same_key(tmp_path):
    config = cf.load_config(write(tmp_path, "[defaults]\nprobe_interval = 5\nkill-signal = 9\n"
                                            "[jobs.j]\nlog_max_size = '1MB'\nretry_exit_codes = [1, 75]\n"))
    assert config.defaults == {"probe-interval": 5, "kill-signal": 9}
    assert config.jobs["j"] == {"log-max-size": "1MB", "retry-exit-codes": "1,75"}
    assert config.line_of("jobs.j", "retry-exit-codes") == 6
    assert config.line_of("jobs.j", "log_max_size") == 5
    assert config.line_of("jobs.j", "log-max-size") == 5
    assert config.line_of("jobs.j", "timeout") == 4  # not in the table: the table's header
    assert config.line_of("defaults", "probe-interval") == 2
    settings, origins = cf.effective_settings(config, "j", {"probe_interval": "7s"})
    assert settings["probe-interval"] == "7s" and origins["probe-interval"] == "flag"


def test_value_shapes_match_the_command_line(tmp_path):
    (tmp_path / "sub").mkdir()
    config = cf.load_config(write(tmp_path, """\
[defaults]
state-dir = "state"
alert-on = ["stall", "ESCALATE"]
alert-webhook = "https://example.com/hook"
webhook-format = "Slack"
if-running = "WAIT"
[jobs.j]
command = ["./run.sh"]
progress-pattern = "^page (\\\\d+)"
checkpoint-file = "sub/cp"
heartbeat-file = "~/hb"
retry-exit-codes = "1, 2"
restart = "On-Failure"
"""))
    assert config.defaults == {"state-dir": str(tmp_path / "state"), "alert-on": "stall,escalate",
                               "alert-webhook": ["https://example.com/hook"], "webhook-format": "slack",
                               "if-running": "wait"}
    job = config.jobs["j"]
    assert job["progress-pattern"] == ["^page (\\d+)"]
    assert job["checkpoint-file"] == str(tmp_path / "sub" / "cp")  # relative to the config file
    assert job["heartbeat-file"] == os.path.expanduser("~/hb")
    assert job["retry-exit-codes"] == "1,2" and job["restart"] == "on-failure"


def test_empty_file_and_dev_null_are_valid(tmp_path):
    config = cf.load_config(write(tmp_path, "# nothing yet\n"))
    assert config.defaults == {} and config.jobs == {}
    assert cf.load_config("/dev/null").jobs == {}


# ----------------------------------------------------------------------------------------------- errors

ERRORS = [
    # (file text, line, fragment of the message after "FILE:LINE: ")
    ('[defaults]\ntimeout = "5m"\n\n[jobs.scraper]\nresponse-timout = "2m"\n', 5,
     "[jobs.scraper] response-timout: unknown key (did you mean response-timeout?)"),
    ("[defaults]\n# comment\nresponse_timout = 1\n", 3,
     "[defaults] response_timout: unknown key (did you mean response_timeout?)"),
    ("[jobs.j]\nwhatever = 1\n", 2, "[jobs.j] whatever: unknown key"),
    ("[jobs.j]\nname = 'x'\n", 2, "[jobs.j] name: not allowed"),
    ("[jobs.j]\nconfig = 'x'\n", 2, "[jobs.j] config: not allowed"),
    # wrong types
    ("[jobs.j]\nprogress-pattern = 5\n", 2, "[jobs.j] progress-pattern: expected a regular expression"),
    ("[jobs.j]\nfatal-pattern = ['ok', 3]\n", 2, "[jobs.j] fatal-pattern: expected a regular expression"),
    ("[jobs.j]\npty = \"yes\"\n", 2, '[jobs.j] pty: expected true or false, got string "yes"'),
    ("[jobs.j]\nmax-restarts = '3'\n", 2, '[jobs.j] max-restarts: expected a whole number, got string "3"'),
    ("[jobs.j]\ntimeout = true\n", 2, "[jobs.j] timeout: expected a duration"),
    ("[jobs.j]\nprobe = 1\n", 2, "[jobs.j] probe: expected a string, got integer 1"),
    ("[jobs.j]\ncommand = './x.sh'\n", 2, "[jobs.j] command: expected a non-empty array of strings"),
    ("[jobs.j]\ncommand = ['./x.sh', 1]\n", 2, "[jobs.j] command: expected an array of strings"),
    ("[jobs.j]\ncommand = []\n", 2, "[jobs.j] command: expected a non-empty array"),
    ("[jobs.j]\nalert-webhook = [1]\n", 2, "[jobs.j] alert-webhook: expected a string or an array of strings"),
    ("[jobs.j]\nstart-grace = 2024-01-01\n", 2, "[jobs.j] start-grace: expected a duration"),
    ("[jobs.j]\nkill-signal = 1.5\n", 2, "[jobs.j] kill-signal: expected a signal name"),
    # invalid values
    ('[jobs.j]\n\ntimeout = "5 minutes"\n', 3, "[jobs.j] timeout: invalid duration '5 minutes'"),
    ("[jobs.j]\ndeadline = -1\n", 2, "[jobs.j] deadline: invalid duration"),
    ("[jobs.j]\nlease = 0\n", 2, "[jobs.j] lease: must be greater than 0"),
    ("[jobs.j]\nlog-max-size = '5XB'\n", 2, "[jobs.j] log-max-size: invalid size '5XB'"),
    ("[jobs.j]\nkill-signal = 'FOO'\n", 2, "[jobs.j] kill-signal: unknown signal 'FOO'"),
    ("[jobs.j]\nrestart = 'always'\n", 2, "[jobs.j] restart: unknown restart mode 'always'"),
    ("[jobs.j]\nif-running = 'queue'\n", 2, "[jobs.j] if-running: unknown mode 'queue'"),
    ("[jobs.j]\nwebhook-format = 'teams'\n", 2, "[jobs.j] webhook-format: unknown value 'teams'"),
    ("[jobs.j]\nalert-on = 'stal,escalate'\n", 2, "[jobs.j] alert-on: unknown event 'stal' (did you mean stall?)"),
    ("[jobs.j]\nretry-exit-codes = [1, 300]\n", 2, "[jobs.j] retry-exit-codes: invalid exit code '300'"),
    ("[jobs.j]\nfatal-pattern = ['(unclosed']\n", 2, "[jobs.j] fatal-pattern: invalid regular expression"),
    ("[jobs.j]\nprobe-failures = 0\n", 2, "[jobs.j] probe-failures: must be at least 1"),
    ("[jobs.j]\nmax-restarts = -1\n", 2, "[jobs.j] max-restarts: expected a whole number >= 0"),
    # placement
    ("[defaults]\ncommand = ['a']\n", 2, "[defaults] command: only allowed in a [jobs.NAME] table"),
    ("[jobs.j]\nstate-dir = '/tmp'\n", 2, "[jobs.j] state-dir: only allowed in [defaults]"),
    ('timeout = "5m"\n', 1, "timeout: keys must be inside [defaults] or a [jobs.NAME] table"),
    ("[jobs.j]\ntimeout = 1\nresponse-timeout = 1\nresponse_timeout = 2\n", 4,
     "[jobs.j] response_timeout: set twice (also as response-timeout on line 3)"),
    # tables
    ("\n[default]\ntimeout = 1\n", 2, "[default]: unknown table (did you mean [defaults]?)"),
    ("[misc]\na = 1\n", 1, "[misc]: unknown table (expected [defaults] or [jobs.NAME])"),
    ('[jobs."bad name"]\ntimeout = 1\n', 1, "[jobs.bad name]: invalid job name 'bad name'"),
    ("[jobs]\nj = 3\n", 2, "[jobs] j: expected a table [jobs.j], got integer 3"),
    ("[[jobs]]\ntimeout = 1\n", 1, "jobs: expected tables [jobs.NAME], got array"),
    ("defaults = 1\n", 1, "defaults: expected a table [defaults], got integer 1"),
    ("[jobs.j]\ntimeout = 1\n[jobs.j.extra]\na = 1\n", 3, "[jobs.j] extra: unknown key"),
    # dotted keys and inline tables are located too
    ("[jobs]\nj.timeout = 1\nj.gracee = 1\n", 3, "[jobs.j] gracee: unknown key (did you mean grace?)"),
    ("[jobs]\n\nj = { timeout = 1, foo = 2 }\n", 3, "[jobs.j] foo: unknown key"),
    # multi-line strings and arrays do not confuse the line finder
    ('[jobs.a]\nprobe = """\n[jobs.b]\nfoo = 1\n"""\nfatal-pattern = [\n  "x",\n  "y",\n]\nbar = 1\n', 10,
     "[jobs.a] bar: unknown key"),
]


@pytest.mark.parametrize("text,line,fragment", ERRORS, ids=[e[2].split(":")[0] + f"-{i}" for i, e in enumerate(ERRORS)])
def test_every_error_names_file_line_and_key(tmp_path, text, line, fragment):
    path, message = load_error(tmp_path, text)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message


def test_invalid_toml_names_file_and_line(tmp_path):
    path, message = load_error(tmp_path, '[defaults]\ntimeout = "5m"\ngrace = \n')
    assert message.startswith(f"{path}:3: invalid TOML: Invalid value"), message
    path, message = load_error(tmp_path, '[jobs.j]\ntimeout = 1\n\ntimeout = 2\n')
    assert message.startswith(f"{path}:4: invalid TOML:"), message
    path, message = load_error(tmp_path, '[jobs.j]\nprobe = "unterminated\n')
    assert message.startswith(f"{path}:2: invalid TOML:"), message


def test_invalid_utf8_and_unreadable_files(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"[jobs.j]\n\nprobe = '\xff'\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: invalid TOML: not valid UTF-8$"):
        cf.load_config(path)
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: cannot read config file: is a directory$"):
        cf.load_config(tmp_path)
    if os.geteuid() != 0:
        path.write_text("")
        path.chmod(0)
        with pytest.raises(ConfigError, match=rf"^{path}: cannot read config file: Permission denied$"):
            cf.load_config(path)


def test_usage_error_from_a_config_value_is_reattributed(tmp_path):
    path = write(tmp_path, "[defaults]\ngrace = '1s'\n[jobs.j]\ncommand = ['true']\n\ncheckpoint-file = 'nodir/cp'\n")
    config = cf.load_config(path)
    settings, origins = cf.effective_settings(config, "j", {})
    exc = UsageError(f"--checkpoint-file: directory {str(tmp_path / 'nodir')!r} does not exist")
    err = cf.usage_error_origin(exc, config, "j", origins)
    assert isinstance(err, ConfigError)
    assert str(err) == f"{path}:6: [jobs.j] checkpoint-file: directory {str(tmp_path / 'nodir')!r} does not exist"
    flag = UsageError("--timeout: invalid duration 'x'")
    assert cf.usage_error_origin(flag, config, "j", origins) is flag
    assert str(config.error("defaults", "grace", "too short")) == f"{path}:2: [defaults] grace: too short"


# ----------------------------------------------------------------------------------------------- discovery

def test_explicit_config_must_exist(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{missing}: config file not found \(--config\)$") as info:
        cf.find_config(str(missing), {})
    assert info.value.exit_code == 125
    path = write(tmp_path, "")
    assert cf.find_config(str(path), {"HBWRAP_CONFIG": str(missing)}) == str(path)  # --config wins


def test_hbwrap_config_env(tmp_path):
    path = write(tmp_path, "", "mine.toml")
    env = {"HBWRAP_CONFIG": str(path), "XDG_CONFIG_HOME": str(tmp_path)}
    assert cf.find_config(None, env) == str(path)
    env["HBWRAP_CONFIG"] = str(tmp_path / "gone.toml")
    with pytest.raises(ConfigError, match=r"gone.toml: config file not found \(\$HBWRAP_CONFIG\)$"):
        cf.find_config(None, env)


def test_xdg_discovery(tmp_path, monkeypatch):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    assert cf.find_config(None, env) is None  # absent is fine
    xdg = tmp_path / "xdg" / "hbwrap" / "config.toml"
    xdg.parent.mkdir(parents=True)
    xdg.write_text("[defaults]\ntimeout = '1m'\n")
    assert cf.find_config(None, env) == str(xdg)
    assert cf.resolve_config(None, env).defaults == {"timeout": "1m"}
    # without XDG_CONFIG_HOME (or with a relative one): ~/.config
    home_cfg = tmp_path / "home" / ".config" / "hbwrap" / "config.toml"
    monkeypatch.delitem(env, "XDG_CONFIG_HOME")
    assert cf.find_config(None, env) is None
    home_cfg.parent.mkdir(parents=True)
    home_cfg.write_text("")
    assert cf.find_config(None, env) == str(home_cfg)
    monkeypatch.setitem(env, "XDG_CONFIG_HOME", "relative/dir")
    assert cf.find_config(None, env) == str(home_cfg)
    assert cf.default_config_path(env) == str(home_cfg)
    monkeypatch.setitem(env, "HBWRAP_CONFIG", str(tmp_path / "x.toml"))
    assert cf.default_config_path(env) == str(tmp_path / "x.toml")


# ----------------------------------------------------------------------------------------------- writing

def test_to_toml_round_trips_with_origins(tmp_path):
    path = write(tmp_path, PRECEDENCE)
    config = cf.load_config(path)
    settings, origins = cf.effective_settings(config, "scraper", {"timeout": "5m", "state_dir": "/var/hb",
                                                                  "retry_exit_codes": "1,2"})
    text = cw.to_toml(settings, origins, job="scraper")
    data = tomllib.loads(text)
    job = data["jobs"]["scraper"]
    assert job["timeout"] == "5m" and job["response-timeout"] == "2m" and job["grace"] == "20s"
    assert job["command"] == ["python3", "scrape.py", "--all"]
    assert job["progress-pattern"] == [DEFAULT_PROGRESS_PATTERN]
    assert "deadline" not in job  # unset: a comment, TOML has no null
    assert data["defaults"] == {"state-dir": "/var/hb"}  # state-dir belongs in [defaults]
    assert 'timeout = "5m"  # from flag' in text
    assert f'response-timeout = "2m"  # from {path}:[jobs.scraper]' in text
    assert f'grace = "20s"  # from {path}:[defaults]' in text
    assert 'kill-signal = "TERM"  # from default' in text
    assert "# deadline: not set" in text
    # the output is itself a valid config file that yields the same settings
    again = cf.load_config(write(tmp_path, text, "shown.toml"))
    settings2, _ = cf.effective_settings(again, "scraper", {})
    assert {k: v for k, v in settings2.items() if v is not None} == {k: v for k, v in settings.items() if v is not None}


def test_to_toml_without_job_or_origins(tmp_path):
    settings, _ = cf.effective_settings(None, None, {})
    text = cw.to_toml(settings)
    data = tomllib.loads(text)
    assert list(data) == ["defaults"]
    assert data["defaults"]["max-restarts"] == 3 and "# from" not in text
    odd = dict(settings, **{"progress-pattern": ('a"b\\c', "ünï\ncode")})
    assert tomllib.loads(cw.to_toml(odd, {"progress-pattern": "weird\norigin"}, job="my.job"))[
        "jobs"]["my.job"]["progress-pattern"] == ['a"b\\c', "ünï\ncode"]


def test_starter_config_loads_and_describes_three_jobs(tmp_path):
    target = tmp_path / "new" / "dir" / "config.toml"
    cw.write_starter(target, force=False)
    assert target.read_text() == cw.STARTER_CONFIG
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    config = cf.load_config(target)
    assert len(config.jobs) == 3 and all("command" in job for job in config.jobs.values())
    kinds = list(config.jobs.values())
    assert any(j.get("probe") and j.get("pty") for j in kinds)
    assert any(j.get("restart") == "on-failure" and j.get("retry-exit-codes") and j.get("timeout") for j in kinds)
    assert any(j.get("progress-timeout") and j.get("resume") for j in kinds)
    for name in config.jobs:
        settings, _ = cf.effective_settings(config, name, {"state_dir": str(tmp_path / "state")})
        opts = run_options(settings, name=name)
        assert opts.command == tuple(config.jobs[name]["command"])


def test_starter_never_overwrites_without_force(tmp_path):
    target = write(tmp_path, "# mine\n")
    with pytest.raises(ConfigError, match=rf"^{target}: already exists \(use --force to overwrite it\)$"):
        cw.write_starter(target, force=False)
    assert target.read_text() == "# mine\n"
    cw.write_starter(target, force=True)
    assert target.read_text() == cw.STARTER_CONFIG
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    with pytest.raises(ConfigError, match="is a directory"):
        cw.write_starter(tmp_path, force=True)


def test_run_keys_cover_the_run_command():
    from hbwrap import cli

    params = set(inspect.signature(cli.run).parameters) - {"ctx", "command", "name", "config"}
    missing = {p.replace("_", "-") for p in params} - set(cf.RUN_KEYS)
    assert not missing, f"run options without a config key: {missing}"
    for key in ("alert-cmd", "alert-webhook", "webhook-format", "alert-on", "ping-url", "if-running", "lease"):
        assert key in cf.RUN_KEYS


def test_unknown_flag_is_a_programming_error():
    with pytest.raises(ValueError, match="no_such"):
        cf.effective_settings(None, None, {"no_such": "1"})
    settings, origins = cf.effective_settings(None, None, {"name": "x", "config": "y", "command": ("a", "b")})
    assert settings["command"] == ["a", "b"] and origins["command"] == "flag"


def test_state_dir_env_sits_between_flag_and_file(tmp_path):
    config = cf.load_config(write(tmp_path, "[defaults]\nstate-dir = '/from/file'\n"))
    settings, origins = cf.effective_settings(config, None, {}, env={"HBWRAP_STATE_DIR": "/from/env"})
    assert settings["state-dir"] == "/from/env" and origins["state-dir"] == "$HBWRAP_STATE_DIR"
    settings, origins = cf.effective_settings(config, None, {"state-dir": "/flag"}, env={"HBWRAP_STATE_DIR": "/e"})
    assert settings["state-dir"] == "/flag" and origins["state-dir"] == "flag"
    settings, origins = cf.effective_settings(config, None, {}, env={"HBWRAP_STATE_DIR": ""})
    assert settings["state-dir"] == "/from/file"
