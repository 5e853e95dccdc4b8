"""The texts of alerts: one-line summaries, chat (slack/discord) and JSON webhook bodies, ping endpoints and bodies.

Pure functions of an event (and the output tail read when it happened): no I/O, no threads, so every
text can be tested by itself and the delivery side only carries bytes.
"""
from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

DEFAULT_ALERT_ON = frozenset({"stall", "escalate", "takeover", "restart_pending"})
WEBHOOK_FORMATS = ("json", "slack", "discord")

PING_BODY_BYTES = 10_000           # healthchecks keeps the first PING_BODY_LIMIT bytes (10,000 self-hosted by
                                   # default); the Ping-Body-Limit of its reply sets it for the later pings,
PING_BODY_MAX_BYTES = 100_000      # up to this (what hosted healthchecks.io allows)
PING_ALIGN_BYTES = 1000            # a cut ping body starts at a line start found this near the cut
PING_LINE_MAX_CHARS = 500          # the `hbwrap: ...` line that ends a ping body
TAIL_EVENTS = frozenset({"stall", "failure", "escalate", "exit"})  # events whose alert shows the output tail
JSON_TAIL_CHARS, JSON_TAIL_LINES = 4000, 60
CHAT_TAIL_CHARS, CHAT_TAIL_LINES = 1500, 20
DISCORD_MAX_CHARS = 2000
SUMMARY_MAX_CHARS = 900
FIELD_MAX_CHARS = 8192             # any one string of the event, as sent (a checkpoint can be a huge line)
INCIDENT_MAX_LINES, INCIDENT_LINE_CHARS = 8, 160  # a stall's incident_summary in chat and JSON alerts


# --- healthchecks.io pings ----------------------------------------------------------------------

def ping_rid(run_id: str) -> str:
    """The `rid` sent with pings: healthchecks.io accepts only UUIDs, so a run id that is not one is
    mapped to a stable UUID (uuid5), the same in every supervisor of the run (takeover included)."""
    import uuid

    try:
        return str(uuid.UUID(run_id))
    except (ValueError, TypeError, AttributeError):
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "hbwrap-run:" + str(run_id)))


def ping_endpoint(ping_url: str, action: str, run_id: str | None) -> str:
    """`ping_url` + `/action` (start, fail, log; "" for success) + `?rid=…`, keeping its own query (`?create=1`)."""
    parts = urlsplit(ping_url)
    path = parts.path.rstrip("/")
    if action:
        path += "/" + action
    query = [p for p in parts.query.split("&") if p and not p.startswith("rid=")]
    if run_id:
        query.append("rid=" + ping_rid(run_id))
    return urlunsplit((parts.scheme, parts.netloc, path or "/", "&".join(query), ""))


RUN_END_EVENTS = frozenset({"success", "failure", "escalate", "stop"})
_PING_LOG_EVENTS = frozenset({"stall", "takeover", "restart_pending", "lease_lost"})


def ping_action(event: dict) -> str | None:
    """The ping an event sends: `start`; at the end `<exit code>` (`0` on success, so the server records it, and
    `fail` only where no code exists); `log` within the run (stall, takeover, waiting for approval, lease lost);
    None for the rest."""
    name = event.get("event")
    if name == "run_start":
        return "start"
    if name in _PING_LOG_EVENTS:
        return "log"
    if name not in RUN_END_EVENTS:
        return None
    code = 0 if name == "success" else event.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 255 and (code > 0 or name == "success"):
        return str(code)
    return "fail"  # e.g. the keeper was lost and nobody knows how the command ended


def ping_line(event: dict, stall_reasons: list[str] | tuple = (), last_exit: dict | None = None) -> str:
    """The last line of a ping body, after `hbwrap: `: at the end of a run its exit code, attempts and reason
    (`exit code 124 after 3 attempts: gave up (restarts exhausted), last stall: response`); within it, what
    happened. `stall_reasons` are the run's stalls so far, `last_exit` its latest `exit` event."""
    name = event.get("event")
    attempt = event.get("attempt")
    if name not in RUN_END_EVENTS:
        text = f"attempt {attempt} {_headline(event)}" if attempt else _headline(event)
        extra = _approval_text(event) if name == "restart_pending" else event.get("detail")
        return one_line(text + (f": {extra}" if extra else ""), PING_LINE_MAX_CHARS)
    code = 0 if name == "success" else event.get("exit_code")
    head = f"exit code {code}" if isinstance(code, int) else "no exit code"
    if isinstance(attempt, int):
        head += f" after {attempt} attempt" + ("" if attempt == 1 else "s")
    reason = event.get("reason")
    if name == "success":
        what = "succeeded"
        if stall_reasons:
            count = len(stall_reasons)
            what += (f" after 1 stall ({stall_reasons[0]})" if count == 1
                     else f" after {count} stalls (the last: {stall_reasons[-1]})")
    elif name == "failure":
        what = "failed"
        if last_exit and last_exit.get("signal"):
            what += f" (killed by {last_exit['signal']})"
    elif name == "escalate":
        what = f"gave up ({reason or 'escalated'})"
        if reason in ("command not found", "command not executable") and last_exit and last_exit.get("detail"):
            what += f": {last_exit['detail']}"
        stall = event.get("stall") or (stall_reasons[-1] if stall_reasons else None)
        if stall:
            what += f", last stall: {stall}"
        if event.get("fatal_line"):
            what += f", fatal line: {event['fatal_line']}"
    else:
        how = event.get("by") or event.get("signal")
        what = f"stopped ({how})" if how else "stopped"
    return one_line(f"{head}: {what}", PING_LINE_MAX_CHARS)


def ping_body(output: bytes, line: str | None, limit: int) -> bytes:
    """The POST body of a ping: the newest output, then one line `hbwrap: <line>`, all within `limit` bytes.

    healthchecks keeps the first Ping-Body-Limit bytes of a body and, with keyword filtering on, decodes them as
    strict UTF-8 (HTTP 500 otherwise): so the body is valid UTF-8 and the output part starts at a character
    boundary, at a line start when one lies within its first PING_ALIGN_BYTES (see `utf8_tail`).
    """
    limit = max(0, int(limit))
    end = b""
    if line:
        end = _utf8_head(("hbwrap: " + line).encode("utf-8", "replace"), max(0, limit - 1)) + b"\n"
        if len(end) > limit:
            end = b""
    room = limit - len(end)
    if output and end and not output.endswith(b"\n"):
        room -= 1  # the newline that puts our line on a line of its own
    out = utf8_tail(output, room) if room > 0 else b""
    if out and end and not out.endswith(b"\n"):
        out += b"\n"
    return out + end


# --- text ---------------------------------------------------------------------------------------

_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(value: str) -> str:
    """A string safe to encode as UTF-8 (lone surrogates from undecodable output become U+FFFD)."""
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value


def one_line(value, limit: int = 200) -> str:
    text = _CONTROL_RE.sub(" ", clean_text(str(value)).replace("\n", " ").replace("\r", " ")).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _skip_continuation(data: bytes) -> bytes:
    """`data` from its first byte that is not a UTF-8 continuation byte (at most 3 are skipped)."""
    start = 0
    while start < min(3, len(data)) and 0x80 <= data[start] <= 0xBF:
        start += 1
    return data[start:]


def _utf8_head(data: bytes, limit: int) -> bytes:
    """The first `limit` bytes of valid UTF-8 `data`, never ending inside a character."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and 0x80 <= data[end] <= 0xBF:
        end -= 1
    return data[:end]


def utf8_tail(raw: bytes, limit: int, align: int = PING_ALIGN_BYTES) -> bytes:
    """The end of the output in at most `limit` bytes of valid UTF-8 (invalid bytes become U+FFFD).

    When it had to be cut, it starts after the first newline if one lies within its first `align` bytes (no
    half line at the top), else at the first character boundary after the cut (a long line keeps its end).
    """
    if limit <= 0:
        return b""
    cut = len(raw) > limit
    piece = _skip_continuation(raw[len(raw) - limit:]) if cut else raw
    text = piece.decode("utf-8", "replace").encode("utf-8")
    if len(text) > limit:  # a replaced byte takes 3: cut again, now at a boundary of valid UTF-8
        text, cut = _skip_continuation(text[len(text) - limit:]), True
    if cut:
        nl = text.find(b"\n", 0, align)
        if 0 <= nl < len(text) - 1:
            text = text[nl + 1:]
    return text


def tail_text(raw: bytes, max_chars: int, max_lines: int) -> str:
    """The end of the output as readable text: decoded, terminal escapes and carriage-return redraws removed."""
    text = raw.decode("utf-8", "replace")
    text = _ANSI_RE.sub("", text).replace("\r\n", "\n")
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    lines = [_CONTROL_RE.sub("", line.expandtabs(4)).rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    lines = lines[-max_lines:]
    out = "\n".join(lines)
    if len(out) > max_chars:
        out = out[-max_chars:]
        if "\n" in out[:-1]:
            out = out[out.index("\n") + 1:]  # start at a line boundary when there is one
    return out


def hhmm(ts: str | None) -> str:
    """Local wall-clock HH:MM of an event's ISO UTC timestamp (cron lines are written in local time)."""
    try:
        when = datetime.fromisoformat(str(ts).replace("Z", "+00:00")) if ts else datetime.now().astimezone()
        return when.astimezone().strftime("%H:%M")
    except ValueError:
        return "?"


def fmt_duration(value) -> str:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{seconds:.3g}s" if seconds < 100 else f"{seconds:.0f}s"


def _headline(event: dict) -> str:
    name = event.get("event")
    reason = event.get("reason")
    code = event.get("exit_code")
    if name == "run_start":
        return "started"
    if name == "attempt_start":
        resume = event.get("resume_from")
        return f"attempt {event.get('attempt')} started" + (f", resuming from {one_line(resume)}" if resume else "")
    if name == "checkpoint":
        return f"reached checkpoint {one_line(event.get('checkpoint'))}"
    if name == "stall":
        return f"stalled ({reason})" if reason else "stalled"
    if name == "kill":
        return f"sent {event.get('signal')} to the command" + (f" ({reason})" if reason else "")
    if name == "exit":
        if event.get("signal"):
            return f"command killed by {event['signal']}"
        if code is not None:
            return f"command exited with code {code}"
        return "command ended, exit status unknown"
    if name == "restart":
        return f"restarting in {fmt_duration(event.get('delay_s'))}"
    if name == "success":
        return "succeeded"
    if name == "failure":
        return f"failed with exit code {code}" + (f" ({reason})" if reason else "")
    if name == "escalate":
        return f"gave up ({reason or 'escalated'})" + (f", exit code {code}" if code is not None else "")
    if name == "takeover":
        prev = event.get("previous_supervisor_pid")
        return "taken over by a new supervisor" + (f" (the previous one, pid {prev}, died or hung)" if prev else "")
    if name == "stop":
        return f"stopped ({event.get('signal')})" if event.get("signal") else "stopped"
    if name == "restart_pending":
        return "waits for approval to restart"
    if name in ("approved", "denied"):
        by = event.get("by")
        return f"restart {name}" + (f" by {one_line(by, 100)}" if by else "")
    if name == "lease_lost":
        return "lost its lease"
    return str(name)


def _human_duration(value) -> str | None:
    """`30m`, `1h30m`, `45s` for a number of seconds; None when it is not one."""
    try:
        seconds = int(round(float(value)))
    except (TypeError, ValueError, OverflowError):
        return None
    if seconds < 60:
        return f"{max(seconds, 0)}s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs and not hours else "")


def approval_commands(event: dict) -> tuple[str, str]:
    """The commands that answer a `restart_pending` event (job names never need shell quoting)."""
    job = one_line(event.get("job") or "NAME", 64)
    return f"hbwrap approve {job}", f"hbwrap deny {job}"


def _approval_text(event: dict) -> str:
    """What to run, where and by when, e.g. run `hbwrap approve J` to restart now or `hbwrap deny J` to give up,
    on host web-1, before 02:43 (30m window)."""
    approve, deny = approval_commands(event)
    text = f"run `{approve}` to restart now or `{deny}` to give up"
    if event.get("host"):
        text += f", on host {one_line(event['host'], 100)}"
    window = _human_duration(event.get("delay_s"))
    if event.get("approve_by"):
        text += f", before {hhmm(event['approve_by'])}" + (f" ({window} window)" if window else "")
    elif window:
        text += f", within {window}"
    default = event.get("approval_default")
    if default in ("restart", "abort"):
        text += "; without an answer it " + ("restarts" if default == "restart" else "gives up")
    return text


def incident_lines(event: dict) -> list[str]:
    """A stall's `incident_summary` (a string of lines, or a list), bounded: one short line per process."""
    summary = event.get("incident_summary")
    if not summary:
        return []
    raw = summary if isinstance(summary, (list, tuple)) else str(summary).split("\n")
    lines = [one_line(line, INCIDENT_LINE_CHARS) for line in raw if str(line).strip()]
    if len(lines) > INCIDENT_MAX_LINES:
        more = len(lines) - INCIDENT_MAX_LINES + 1
        lines = lines[:INCIDENT_MAX_LINES - 1] + [f"… {more} more"]
    return lines


def summarize(event: dict, recovery: dict | None = None) -> str:
    """One readable line: job, what happened, when, attempt, checkpoint, why.

    e.g. `reddit-3am stalled (response) at 02:13, attempt 2, checkpoint page-42: no sign of life for 120s`.
    """
    name = event.get("event")
    parts = [f"{one_line(event.get('job') or '?', 64)} {_headline(event)} at {hhmm(event.get('ts'))}"]
    if event.get("attempt") and name != "attempt_start":
        parts.append(f"attempt {event['attempt']}")
    if event.get("checkpoint") and name != "checkpoint":
        parts.append(f"checkpoint {one_line(event['checkpoint'])}")
    text = ", ".join(parts)
    extra = []
    if recovery:
        at, why, count = recovery["stalled_at_hhmm"], recovery["stall_reason"], recovery["stalls"]
        line = f"stalled at {at} ({why})" if count == 1 else f"stalled {count} times (first at {at}, {why})"
        line += f", recovered at {recovery['recovered_at_hhmm']}"
        if recovery.get("resumed_from"):
            line += f" from checkpoint {one_line(recovery['resumed_from'])}"
        extra.append(line)
    if name == "restart_pending":
        extra.append(_approval_text(event))
    if event.get("detail"):
        extra.append(one_line(event["detail"], 300))
    if name == "stall" and event.get("incident"):
        extra.append(f"incident {one_line(event['incident'], 80)} (`hbwrap incident {one_line(event.get('job'), 64)}`)")
    if name == "escalate" and event.get("fatal_line"):
        extra.append(f"fatal line: {one_line(event['fatal_line'])}")
    if extra:
        text += ": " + "; ".join(extra)
    return text if len(text) <= SUMMARY_MAX_CHARS else text[:SUMMARY_MAX_CHARS - 1] + "…"


def _fence(text: str) -> str:
    """Output inside a ``` block, unable to close it early."""
    return text.replace("```", "`\u200b`\u200b`")


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_body(fmt: str, event: dict, summary: str, tail: bytes | None, extra: dict | None = None) -> dict:
    """The JSON document POSTed to a webhook of format `fmt` (json, slack, discord)."""
    procs = "\n".join(incident_lines(event))
    if fmt == "slack":
        text = _slack_escape(summary)
        if procs:
            text += "\n```\n" + _slack_escape(_fence(procs)) + "\n```"
        if tail:
            out = tail_text(tail, CHAT_TAIL_CHARS, CHAT_TAIL_LINES)
            if out.strip():
                text += "\n```\n" + _slack_escape(_fence(out)) + "\n```"
        return {"text": text}
    if fmt == "discord":
        return _discord_body(summary, procs, tail)
    body = dict(event)
    body.update(extra or {})
    body["summary"] = summary
    if "incident_summary" in body:
        body["incident_summary"] = procs
    if event.get("event") == "restart_pending":
        body["approve_command"], body["deny_command"] = approval_commands(event)
    if tail:
        body["output_tail"] = tail_text(tail, JSON_TAIL_CHARS, JSON_TAIL_LINES)
    return body


def _discord_body(summary: str, procs: str, tail: bytes | None) -> dict:
    """Summary, the incident's processes and the output's end, in Discord's 2,000 characters."""
    block = len("\n```\n\n```")
    content = summary[:1000]
    if procs:
        content += f"\n```\n{_fence(procs)[:DISCORD_MAX_CHARS - len(content) - block - 200]}\n```"
    if tail:
        room = DISCORD_MAX_CHARS - len(content) - block
        out = _fence(tail_text(tail, min(room, CHAT_TAIL_CHARS), CHAT_TAIL_LINES)) if room > 40 else ""
        out = out[-room:] if room > 0 else ""
        if out.strip():
            content += f"\n```\n{out}\n```"
    # output may contain @everyone or <@id>: never let it ping anyone
    return {"content": content[:DISCORD_MAX_CHARS], "allowed_mentions": {"parse": []}}


def trimmed_event(event: dict) -> dict:
    """The event as sent: strings cleaned and bounded (a checkpoint may be a megabyte-long line)."""
    out = {}
    for key, value in event.items():
        if isinstance(value, str):
            value = clean_text(value)
            if len(value) > FIELD_MAX_CHARS:
                value = value[:FIELD_MAX_CHARS - 1] + "…"
        out[key] = value
    return out

