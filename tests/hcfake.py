"""A loopback stand-in for a healthchecks.io server: the parts of its ping API that decide what a ping records.

Modelled on healthchecks' own `hc/api/views.py` `ping` and `hc/api/models.py` `Check.ping` (read, not
copied): the endpoints `/ping/<uuid>`, `/start`, `/fail`, `/log` and `/<exit status 0..255>`; only the first
`ping_body_limit` bytes of a body are kept, and every reply says so in `Ping-Body-Limit`; a non-zero exit
status is a failure; with keyword filtering on, the kept body is decoded as strict UTF-8 (a decode error is an
HTTP 500, as Django turns the server's UnicodeDecodeError into one) and the keywords decide the ping's kind;
`rid` must be a UUID; the check flips up/down on success/fail pings and a run's duration needs a matching rid.
"""
from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


@dataclass
class Ping:
    kind: str               # success, start, fail, log, ign
    body: bytes             # as kept (the first ping_body_limit bytes)
    exitstatus: int | None
    rid: str | None
    path: str
    sent_bytes: int         # the body's size as sent, before the server cut it


@dataclass
class FakeCheck:
    code: str = field(default_factory=lambda: str(uuid.uuid4()))
    filter_body: bool = False
    success_kw: str = ""
    failure_kw: str = ""
    start_kw: str = ""
    default_fail: bool = False
    status: str = "new"
    flips: list[str] = field(default_factory=list)       # new statuses, in order
    pings: list[Ping] = field(default_factory=list)
    last_start_rid: str | None = None
    running: bool = False                                # between a /start and its end
    durations: list[float] = field(default_factory=list)  # runs whose end matched the start's rid
    last_start_at: float | None = None


def _match(body: str, keywords: str) -> bool:
    return any(k.strip() and k.strip() in body for k in keywords.split(","))


class FakeHealthchecks:
    """One check at `url`; `check` holds what the server recorded; `errors` the requests it refused (status, text)."""

    def __init__(self, ping_body_limit: int | None = 10_000, **check):
        self.ping_body_limit = ping_body_limit
        self.check = FakeCheck(**check)
        self.errors: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, text = outer._ping(self.path, body)
                data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 200 and outer.ping_body_limit is not None:
                        self.send_header("Ping-Body-Limit", str(outer.ping_body_limit))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping/{self.check.code}"

    @property
    def pings(self) -> list[Ping]:
        with self.lock:
            return list(self.check.pings)

    def wait_pings(self, n: int, timeout: float = 10.0) -> list[Ping]:
        end = time.monotonic() + timeout
        while len(self.pings) < n:
            if time.monotonic() >= end:
                raise AssertionError(f"waited {timeout}s for {n} pings; got {self.pings!r}, errors {self.errors!r}")
            time.sleep(0.01)
        return self.pings

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- what the server does with one ping -----------------------------------------------------------
    def _ping(self, raw_path: str, sent: bytes) -> tuple[int, str]:
        parts = urlsplit(raw_path)
        prefix = f"/ping/{self.check.code}"
        rest = parts.path[len(prefix):] if parts.path.startswith(prefix) else None
        action, exitstatus = {"": "success", "/fail": "fail", "/start": "start", "/log": "log"}.get(rest), None
        if action is None and rest and re.fullmatch(r"/[0-9]+", rest):
            action, exitstatus = "success", int(rest[1:])
        if action is None:
            return self._refuse(404, "not found")
        if exitstatus is not None and exitstatus > 255:
            return self._refuse(400, "invalid url format")
        body = sent[:self.ping_body_limit] if self.ping_body_limit is not None else sent
        if exitstatus is not None and exitstatus > 0:
            action = "fail"
        check = self.check
        if check.filter_body:
            try:
                text = body.decode()
            except UnicodeDecodeError:
                return self._refuse(500, "Internal Server Error")
            if check.failure_kw and _match(text, check.failure_kw):
                action = "fail"
            elif check.success_kw and _match(text, check.success_kw):
                action = "success"
            elif check.start_kw and _match(text, check.start_kw):
                action = "start"
            else:
                action = "fail" if check.default_fail else "ign"
        rid = parse_qs(parts.query).get("rid", [None])[0]
        if rid is not None and not _UUID_RE.match(rid):
            return self._refuse(400, "invalid uuid format")
        with self.lock:
            self._record(action, body, exitstatus, rid, parts.path, len(sent))
        return 200, "OK"

    def _record(self, action: str, body: bytes, exitstatus: int | None, rid: str | None, path: str,
                sent_bytes: int) -> None:
        check, now = self.check, time.monotonic()
        if action == "start":
            check.running, check.last_start_rid, check.last_start_at = True, rid, now
        elif action in ("success", "fail"):
            if check.running and check.last_start_rid == rid:
                check.durations.append(now - check.last_start_at)
                check.running = False
            elif check.running and (action == "fail" or rid is None):
                check.running = False
            new_status = "down" if action == "fail" else "up"
            if check.status != new_status:
                check.flips.append(new_status)
                check.status = new_status
        check.pings.append(Ping(action, body, exitstatus, rid, path, sent_bytes))

    def _refuse(self, status: int, text: str) -> tuple[int, str]:
        with self.lock:
            self.errors.append((status, text))
        return status, text
