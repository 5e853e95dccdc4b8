"""RunOptions and the parsers for durations, sizes, signals, names and patterns used by every command."""
from __future__ import annotations

import os
import re
import signal

from hbwrap.errors import UsageError
from hbwrap.model import RestartMode
from hbwrap.record import asdict, field, fields, record

DEFAULT_PROGRESS_PATTERN = r"^\s*checkpoint[:=]\s*(\S.*?)\s*$"
DEFAULT_RETRY_AFTER_PATTERN = r"^\s*retry[-_ ]after[:=]\s*(\S+)\s*$"
APPROVAL_DEFAULTS = ("abort", "restart")
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_DURATION_S = 36500 * 86400  # 100 years: larger values are refused (and deadlines still fit in a datetime)
MAX_SIZE = 2 ** 50  # 1 PiB
MAX_COUNT = 10 ** 9

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)", re.ASCII)
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+", re.ASCII)
_DIGITS = re.compile(r"[0-9]+")
_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?i?b?)", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "mi": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
               "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4, "p": 1000**5, "pb": 1000**5,
               "pib": 1024**5, "pi": 1024**5}


def _too_large(option: str, text, limit: str) -> UsageError:
    shown = repr(text) if len(repr(text)) <= 40 else repr(text)[:37] + "..."
    return UsageError(f"{option}: {shown} is too large (at most {limit})")


def parse_duration(text: str | float | int, option: str) -> float:
    """Seconds from `90`, `1.5`, `250ms`, `90s`, `15m`, `2h`, `1d` or combinations like `1h30m`.

    At most MAX_DURATION_S (100 years): every deadline hbwrap computes from it stays representable.
    """
    if isinstance(text, bool):
        raise UsageError(f"{option}: invalid duration {text!r}")
    if isinstance(text, int):
        if text > MAX_DURATION_S:  # before float(): a TOML integer may be too big for one
            raise _too_large(option, text, "36500d, 100 years")
        value = float(text)
    elif isinstance(text, float):
        value = text
    else:
        s = str(text).strip().lower()
        if _NUMBER.fullmatch(s):
            value = float(s)
        else:
            pos, value = 0, 0.0
            for m in _DURATION_PART.finditer(s):
                if m.start() != pos:
                    break
                value += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
                pos = m.end()
            if pos != len(s) or not s:
                raise UsageError(f"{option}: invalid duration {text!r} (use e.g. 90, 1.5, 250ms, 90s, 15m, 2h, 1d, 1h30m)")
        if value == float("inf"):  # digits beyond what a float holds
            raise _too_large(option, text, "36500d, 100 years")
    if value < 0 or value != value or value == float("inf"):
        raise UsageError(f"{option}: invalid duration {text!r} (must be a finite number of seconds >= 0)")
    if value > MAX_DURATION_S:
        raise _too_large(option, text, "36500d, 100 years")
    return value


def parse_size(text: str | int, option: str) -> int:
    """Bytes from `50MB`, `10MiB`, `1GB`, `4096`; at most MAX_SIZE (1 PiB)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text > MAX_SIZE:
            raise _too_large(option, text, "1PiB")
        value = float(text)
    else:
        m = _SIZE_RE.fullmatch(str(text).strip())
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise UsageError(f"{option}: invalid size {text!r} (use e.g. 10MB, 1GB, 500KiB)")
        value = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if value < 1:
        raise UsageError(f"{option}: invalid size {text!r} (must be at least 1 byte)")
    if value > MAX_SIZE:
        raise _too_large(option, text, "1PiB")
    return int(value)


def parse_signal(text: str | int, option: str) -> int:
    """A signal number from `TERM`, `SIGTERM`, `term` or `15`."""
    s = str(text).strip()
    if _DIGITS.fullmatch(s):
        num = int(s) if len(s) <= 4 else 0
        valid = {int(sig) for sig in signal.valid_signals()}
        if num in valid and num != 0:
            return num
    else:
        name = s.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if isinstance(sig, signal.Signals):
            return int(sig)
    raise UsageError(f"{option}: unknown signal {text!r} (use e.g. TERM, SIGINT, 9)")


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"SIG{num}"


def parse_count(text: str | int, option: str) -> int:
    """A whole number from 0 to MAX_COUNT."""
    if isinstance(text, int) and not isinstance(text, bool) and text > MAX_COUNT:
        raise _too_large(option, text, str(MAX_COUNT))
    s = str(text).strip() if not isinstance(text, int) else ("-" if text < 0 else str(text))
    if isinstance(text, bool) or not _DIGITS.fullmatch(s):
        raise UsageError(f"{option}: expected a whole number >= 0, got {text!r}")
    s = s.lstrip("0") or "0"
    if len(s) > len(str(MAX_COUNT)) or int(s) > MAX_COUNT:
        raise _too_large(option, text, str(MAX_COUNT))
    return int(s)


def parse_exit_codes(text: str | list, option: str) -> tuple[int, ...]:
    items = text if isinstance(text, list) else str(text).split(",")
    codes = []
    for item in items:
        s = str(item).strip()
        if not _DIGITS.fullmatch(s) or len(s) > 3 or not 0 < int(s) < 256:
            raise UsageError(f"{option}: invalid exit code {item!r} (expected a list like 1,2,75 of codes 1-255)")
        codes.append(int(s))
    if not codes:
        raise UsageError(f"{option}: expected a list of exit codes like 1,2,75")
    return tuple(codes)


def parse_restart(text: str, option: str = "--restart") -> RestartMode:
    try:
        return RestartMode(str(text).strip().lower())
    except ValueError:
        raise UsageError(f"{option}: unknown restart mode {text!r} (use never, on-stall or on-failure)") from None


def parse_if_running(text: str | None, option: str = "--if-running") -> str:
    value = "skip" if text is None else str(text).strip().lower()
    if value not in ("skip", "fail", "wait"):
        raise UsageError(f"{option}: unknown mode {text!r} (use skip, fail or wait)")
    return value


def check_name(name: str, option: str = "--name") -> str:
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"{option}: invalid job name {name!r} (1-64 characters of A-Z a-z 0-9 . _ -)")
    return name


def compile_pattern(text: str, option: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise UsageError(f"{option}: invalid regular expression {text!r}: {exc}") from None
    return pattern


def default_name(command: list[str]) -> str:
    """A stable job name for a command line: `<program>-<8 hex of the whole argv>`."""
    import hashlib  # here, not at the top: it loads OpenSSL, megabytes the supervisor need not carry

    digest = hashlib.sha256("\0".join(command).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(command[0]) if command else "job").strip("._-")
    return f"{(base or 'job')[:48]}-{digest}"


def absolute(path: str) -> str:
    """Path(path).expanduser().absolute() without pathlib (0.7 MB with what it imports): `~` expanded, made
    absolute against the working directory, `.` parts and doubled slashes dropped, `..` kept as it is."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def default_state_dir(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if env.get("HBWRAP_STATE_DIR"):
        return absolute(env["HBWRAP_STATE_DIR"])
    if env.get("XDG_STATE_HOME"):
        return os.path.join(absolute(env["XDG_STATE_HOME"]), "hbwrap")
    return absolute("~/.local/state/hbwrap")


@record(frozen=True)
class RunOptions:
    """Every setting of one `hbwrap run`, validated. Durations in seconds, sizes in bytes."""

    command: tuple[str, ...]
    name: str
    state_dir: str
    cwd: str = field(default_factory=os.getcwd)
    timeout_s: float | None = None
    deadline_s: float | None = None
    response_timeout_s: float | None = None
    progress_timeout_s: float | None = None
    start_grace_s: float = 0.0
    progress_patterns: tuple[str, ...] = (DEFAULT_PROGRESS_PATTERN,)
    checkpoint_file: str | None = None
    heartbeat_file: str | None = None
    probe: str | None = None
    probe_interval_s: float = 30.0
    probe_timeout_s: float = 10.0
    probe_failures: int = 3
    kill_signal: int = int(signal.SIGTERM)
    grace_s: float = 10.0
    restart: RestartMode = RestartMode.ON_STALL
    max_restarts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 300.0
    retry_exit_codes: tuple[int, ...] | None = None
    fatal_patterns: tuple[str, ...] = ()
    resume: bool = True
    quiet: bool = False
    verbose: bool = False
    pty: bool = False
    log_max_size: int = 50 * 1000 * 1000
    lease_s: float = 30.0
    self_heal: bool = True
    alert_cmd: str | None = None
    alert_webhooks: tuple[str, ...] = ()
    webhook_format: str = "json"
    alert_on: tuple[str, ...] | None = None  # None: stall, escalate, takeover, restart_pending
    ping_url: str | None = None
    restart_check: str | None = None
    restart_approval_s: float | None = None
    approval_default: str = "abort"
    activity: tuple[str, ...] = ()
    repeat_timeout_s: float | None = None
    dump_signal: int | None = None
    dump_wait_s: float = 2.0
    retry_after_patterns: tuple[str, ...] = (DEFAULT_RETRY_AFTER_PATTERN,)
    lease_url: str | None = None
    host: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["restart"] = self.restart.value
        return data

    @classmethod
    def from_json(cls, data: dict) -> "RunOptions":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("alert_on") is not None:
            values["alert_on"] = tuple(values["alert_on"])
        for key in ("command", "progress_patterns", "fatal_patterns", "alert_webhooks", "activity",
                    "retry_after_patterns"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        if values.get("retry_exit_codes") is not None:
            values["retry_exit_codes"] = tuple(values["retry_exit_codes"])
        values["restart"] = RestartMode(values.get("restart", RestartMode.ON_STALL.value))
        return cls(**values)


def _check_url(url: str, option: str) -> None:
    from hbwrap.alerts.mask import url_problem

    problem = url_problem(str(url))
    if problem:
        raise UsageError(f"{option}: {problem}")


def parse_alert_on(value, option: str = "--alert-on") -> tuple[str, ...]:
    """`all` or a comma list (or array) of SPEC §7 event names."""
    from hbwrap.model import EVENT_NAMES

    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = [str(item).strip() for item in items if str(item).strip()]
    if names == ["all"]:
        return tuple(EVENT_NAMES)
    unknown = [n for n in names if n not in EVENT_NAMES]
    if unknown or not names:
        raise UsageError(f"{option}: unknown event {', '.join(unknown) or repr(value)} "
                         f"(use all, or a comma list of: {', '.join(EVENT_NAMES)})")
    return tuple(dict.fromkeys(names))


def _dur(value, option: str, default: float | None) -> float | None:
    return default if value is None else parse_duration(value, option)


def _file_option(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    path = absolute(value)
    if os.path.isdir(path):
        raise UsageError(f"{option}: {value!r} is a directory")
    if not os.path.isdir(os.path.dirname(path)):
        raise UsageError(f"{option}: directory {os.path.dirname(path)!r} does not exist")
    return path


def build_run_options(*, command: list[str], name: str | None, state_dir: str | None = None, timeout=None, deadline=None,
                      response_timeout=None, progress_timeout=None, start_grace=None, progress_pattern=None,
                      checkpoint_file=None, heartbeat_file=None, probe=None, probe_interval=None,
                      probe_timeout=None, probe_failures=None, kill_signal=None, grace=None, restart=None,
                      max_restarts=None, backoff=None, backoff_max=None, retry_exit_codes=None,
                      fatal_pattern=None, resume=True, quiet=False, verbose=False, pty=False,
                      log_max_size=None, lease=None, self_heal=True, alert_cmd=None, alert_webhook=None, webhook_format=None,
                      alert_on=None, ping_url=None, restart_check=None, restart_approval=None, approval_default=None,
                      activity=None, repeat_timeout=None, dump_signal=None, dump_wait=None,
                      retry_after_pattern=None, lease_url=None, host=None) -> RunOptions:
    """Validate raw option values (strings from the command line) into RunOptions; UsageError names the option."""
    if not command:
        raise UsageError("missing command: use hbwrap run [OPTIONS] -- COMMAND [ARG...]")
    patterns = tuple(progress_pattern) if progress_pattern else (DEFAULT_PROGRESS_PATTERN,)
    for p in patterns:
        compile_pattern(p, "--progress-pattern")
    fatal = tuple(fatal_pattern or ())
    for p in fatal:
        compile_pattern(p, "--fatal-pattern")
    probe_failures_n = 3 if probe_failures is None else parse_count(probe_failures, "--probe-failures")
    if probe_failures_n < 1:
        raise UsageError("--probe-failures: must be at least 1")
    if probe is not None and not probe.strip():
        raise UsageError("--probe: empty command")
    probe_interval_s = _dur(probe_interval, "--probe-interval", 30.0)
    if probe_interval_s <= 0:
        raise UsageError("--probe-interval: must be greater than 0")
    lease_s = _dur(lease, "--lease", 30.0)
    if lease_s <= 0:
        raise UsageError("--lease: must be greater than 0")
    webhooks = tuple(alert_webhook or ())
    for url in webhooks:
        _check_url(url, "--alert-webhook")
    if ping_url is not None:
        _check_url(ping_url, "--ping-url")
    fmt = "json" if webhook_format is None else str(webhook_format).strip().lower()
    if fmt not in ("json", "slack", "discord"):
        raise UsageError(f"--webhook-format: unknown format {webhook_format!r} (use json, slack or discord)")
    if alert_cmd is not None and not str(alert_cmd).strip():
        raise UsageError("--alert-cmd: empty command")
    more = _newer_options(restart_check, restart_approval, approval_default, activity, repeat_timeout, dump_signal,
                          dump_wait, retry_after_pattern, lease_url, host)
    opts = RunOptions(
        **more,
        alert_cmd=alert_cmd,
        alert_webhooks=webhooks,
        webhook_format=fmt,
        alert_on=parse_alert_on(alert_on) if alert_on is not None else None,
        ping_url=ping_url,
        lease_s=lease_s,
        self_heal=bool(self_heal),
        command=tuple(command),
        name=check_name(name) if name is not None else default_name(list(command)),
        state_dir=absolute(state_dir) if state_dir else default_state_dir(),
        timeout_s=_dur(timeout, "--timeout", None),
        deadline_s=_dur(deadline, "--deadline", None),
        response_timeout_s=_dur(response_timeout, "--response-timeout", None),
        progress_timeout_s=_dur(progress_timeout, "--progress-timeout", None),
        start_grace_s=_dur(start_grace, "--start-grace", 0.0),
        progress_patterns=patterns,
        checkpoint_file=_file_option(checkpoint_file, "--checkpoint-file"),
        heartbeat_file=_file_option(heartbeat_file, "--heartbeat-file"),
        probe=probe,
        probe_interval_s=probe_interval_s,
        probe_timeout_s=_dur(probe_timeout, "--probe-timeout", 10.0),
        probe_failures=probe_failures_n,
        kill_signal=parse_signal(kill_signal, "--kill-signal") if kill_signal is not None else int(signal.SIGTERM),
        grace_s=_dur(grace, "--grace", 10.0),
        restart=parse_restart(restart) if restart is not None else RestartMode.ON_STALL,
        max_restarts=3 if max_restarts is None else parse_count(max_restarts, "--max-restarts"),
        backoff_s=_dur(backoff, "--backoff", 1.0),
        backoff_max_s=_dur(backoff_max, "--backoff-max", 300.0),
        retry_exit_codes=parse_exit_codes(retry_exit_codes, "--retry-exit-codes") if retry_exit_codes is not None else None,
        fatal_patterns=fatal,
        resume=resume,
        quiet=quiet,
        verbose=verbose,
        pty=pty,
        log_max_size=parse_size(log_max_size, "--log-max-size") if log_max_size is not None else 50 * 1000 * 1000,
    )
    return opts


def check_host(text, option: str = "--host") -> str:
    """A host name as others will see it in a shared lease: printable, no spaces, at most 255 characters."""
    value = str(text).strip()
    if not value or len(value) > 255 or any(c.isspace() or not c.isprintable() for c in value):
        raise UsageError(f"{option}: invalid host name {text!r} (1-255 printable characters, no spaces)")
    return value


def _newer_options(restart_check, restart_approval, approval_default, activity, repeat_timeout, dump_signal,
                   dump_wait, retry_after_pattern, lease_url, host) -> dict:
    """The options of restart safety, incidents, activity, repetition and leases across hosts, validated."""
    if restart_check is not None and not str(restart_check).strip():
        raise UsageError("--restart-check: empty command")
    default = "abort" if approval_default is None else str(approval_default).strip().lower()
    if default not in APPROVAL_DEFAULTS:
        raise UsageError(f"--approval-default: unknown value {approval_default!r} (use restart or abort)")
    approval_s = _dur(restart_approval, "--restart-approval", None)
    if restart_approval is not None and approval_s <= 0:
        raise UsageError("--restart-approval: must be greater than 0")
    patterns = tuple(retry_after_pattern) if retry_after_pattern else (DEFAULT_RETRY_AFTER_PATTERN,)
    for p in patterns:
        compile_pattern(p, "--retry-after-pattern")
    if lease_url is not None:
        from hbwrap.lease_url import parse_lease_url

        parse_lease_url(lease_url)
    kinds: tuple[str, ...] = ()
    if activity is not None:
        from hbwrap.activity import parse_activity

        kinds = parse_activity(activity)
    return dict(
        restart_check=restart_check, restart_approval_s=approval_s, approval_default=default, activity=kinds,
        repeat_timeout_s=_dur(repeat_timeout, "--repeat-timeout", None),
        dump_signal=parse_signal(dump_signal, "--dump-signal") if dump_signal is not None else None,
        dump_wait_s=_dur(dump_wait, "--dump-wait", 2.0),
        retry_after_patterns=patterns, lease_url=str(lease_url).strip() if lease_url is not None else None,
        host=check_host(host) if host is not None else None,
    )
