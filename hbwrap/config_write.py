"""Writing config TOML: the effective settings for `config show`, and the starter file of `config init`."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from hbwrap.configfile import RUN_KEYS, UNSET_MEANS
from hbwrap.errors import ConfigError

CONFIG_MODE = 0o600
CONFIG_DIR_MODE = 0o700


def _toml_ready(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "value") and isinstance(getattr(value, "value"), (str, int)):  # enums
        return value.value
    return value


def _origin_comment(origin: str) -> str:
    return f"  # from {origin}".replace("\n", " ")


def to_toml(settings: Mapping[str, Any], origins: Mapping[str, str] | None = None, job: str | None = None) -> str:
    """The settings as TOML under [jobs.JOB] (or [defaults] without a job); with origins, `# from ...` comments.

    Unset values (None) appear as comments, since TOML has no null. The result loads with tomllib.
    """
    lines = ["# effective settings: flags > [jobs.NAME] > [defaults] > built-in defaults"]
    ordered = [k for k in RUN_KEYS if k in settings] + [k for k in settings if k not in RUN_KEYS]
    tables: list[tuple[dict, list[str]]] = []
    if job is not None and settings.get("state-dir") is not None:
        # state-dir is only allowed in [defaults], so that the output can be pasted into a config file
        tables.append(({"defaults": {"x": 0}}, ["state-dir"]))
        ordered.remove("state-dir")
    tables.append(({"jobs": {job: {"x": 0}}} if job is not None else {"defaults": {"x": 0}}, ordered))
    for header_doc, keys in tables:
        lines.append(tomli_w.dumps(header_doc).split("\n", 1)[0])
        for key in keys:
            value = settings[key]
            if value is None:
                lines.append(f"# {key}: not set ({UNSET_MEANS.get(key, 'none')})")
                continue
            chunk = tomli_w.dumps({key: _toml_ready(value)}).rstrip("\n").split("\n")
            origin = origins.get(key) if origins is not None else None
            if origin:
                chunk[-1] += _origin_comment(origin)  # a comment may follow a value or an array's closing bracket
            lines.extend(chunk)
    return "\n".join(lines) + "\n"


STARTER_CONFIG = '''\
# hbwrap configuration file (TOML).
#
# [defaults] applies to every job; [jobs.NAME] tables override it for one job; flags on the
# command line override both. Keys are the long options of `hbwrap run`, with dashes or
# underscores (response-timeout = response_timeout). A job table may hold `command`, so that
#
#     hbwrap run --name NAME
#
# starts it. `hbwrap config show --name NAME --origin` prints what a job will really get.
# Durations: 90, 1.5, 250ms, 90s, 15m, 2h, 1d, 1h30m.  Sizes: 10MB, 1GB, 500KiB.
# Relative paths (checkpoint-file, heartbeat-file, state-dir) are relative to this file;
# `command` runs in the directory hbwrap is started from (use absolute paths from cron).

[defaults]
kill-signal = "TERM"        # first signal to the job's process group when stopping it
grace = "10s"               # then SIGKILL whatever is left
restart = "on-stall"        # never | on-stall | on-failure
max-restarts = 3
backoff = "1s"              # before restart k: backoff * 2^(k-1), jittered, capped by backoff-max
backoff-max = "5m"
if-running = "skip"         # a cron overlap exits 0 at once (fail: exit 75; wait: run afterwards)
log-max-size = "50MB"
# alert-cmd = 'notify-send "hbwrap: $HBWRAP_JOB $HBWRAP_EVENT ($HBWRAP_REASON)"'
# alert-webhook = ["https://hooks.slack.com/services/T000/B000/XXXX"]
# webhook-format = "slack"  # json | slack | discord
# alert-on = ["stall", "escalate", "takeover", "restart_pending"]   # or "all"

# Browser automation: a script drives a headless browser to post at 03:00 sharp.
# Browsers hang on a loading screen or a dialog while the process stays alive, so
# ask the browser itself: the probe fails when its DevTools endpoint stops answering.
# --pty makes programs that buffer their output when not on a terminal stream it.
[jobs.browser-post]
command = ["python3", "/home/me/bots/post_comment.py", "--headless"]
timeout = "15m"             # one attempt may not take longer than this
deadline = "40m"            # the whole run, restarts included: the posting window
response-timeout = "2m"     # no output, heartbeat or passing probe for 2 minutes = stalled
probe = "curl -sf --max-time 5 http://127.0.0.1:9222/json/version >/dev/null"
probe-interval = "30s"
probe-timeout = "10s"
probe-failures = 3          # three failed probes in a row = stalled
pty = true
max-restarts = 2
fatal-pattern = ["account suspended", "(?i)captcha required"]   # do not retry these

# API calls: a client that talks to a rate-limited HTTP API. A request that never
# returns is caught by --timeout; transient failures (exit 75 = EX_TEMPFAIL) are
# retried with back-off, anything else is reported at once.
[jobs.api-sync]
command = ["/usr/local/bin/sync-orders", "--since", "yesterday"]
timeout = "10m"
response-timeout = "3m"
restart = "on-failure"      # restart after non-zero exits too, not only after stalls
retry-exit-codes = [1, 75]  # only these exit codes are retried
max-restarts = 5
backoff = "30s"
backoff-max = "10m"
quiet = true                # cron mode: output only when the run fails

# Long local computation: a research job that runs for hours and may print
# nothing for long stretches. It reports progress by printing `checkpoint: <value>`
# (or by running `hbwrap checkpoint VALUE`); when it makes no progress for 20
# minutes it is restarted and finds the last checkpoint in $HBWRAP_RESUME_FROM.
[jobs.research]
command = ["python3", "/home/me/research/research.py", "--urls", "/home/me/research/urls.txt"]
progress-timeout = "20m"
start-grace = "2m"          # loading models/data does not count against the clocks
progress-pattern = ['^\\s*checkpoint[:=]\\s*(\\S.*?)\\s*$', '^processed url (\\d+)/\\d+']
resume = true               # pass the last checkpoint to the next attempt
restart = "on-failure"
max-restarts = 10
deadline = "8h"
'''


def write_starter(path: Path | str, force: bool = False) -> None:
    """`hbwrap config init`: write STARTER_CONFIG to `path` (mode 0600); never replace a file without force."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory")
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists (use --force to overwrite it)")
    try:
        from hbwrap.jobstore import make_dirs, write_atomic

        make_dirs(path.parent, CONFIG_DIR_MODE)
        if not force:  # O_EXCL: a file that appeared meanwhile is never overwritten
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, CONFIG_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(STARTER_CONFIG)
            return
        write_atomic(path, STARTER_CONFIG.encode("utf-8"), mode=CONFIG_MODE)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists (use --force to overwrite it)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write config file: {exc.strerror or exc}") from None
