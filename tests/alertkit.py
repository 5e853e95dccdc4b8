"""Helpers of the alert tests: events, a scripted loopback HTTP server, a harness that builds Alerters.

The fixtures that use them (`servers`, `h`, `hc`) are in conftest.py.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hbwrap.alerts.delivery import Alerter

SLACK_TOKEN = "abcdEFGHijklMNOPqrstUVWX"
DISCORD_TOKEN = "AbCdEf-GhIjKlMnOpQrStUvWxYz_0123456789abcdefABCDEFghijklmnopqrstuv"
HC_UUID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
HC_PING_KEY = "fqOOd6-F4MMNuCEnzTU01w"
RUN_ID = "20240501T021000Z-a1b2c3"


# --- helpers --------------------------------------------------------------------------------------

def wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {value!r}")
        time.sleep(0.01)


def iso_utc(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def local_ts(hour: int, minute: int) -> str:
    """The ISO UTC timestamp of a local wall-clock time (summaries show local HH:MM)."""
    return iso_utc(datetime(2024, 5, 1, hour, minute).astimezone())


def ev(name: str, **fields) -> dict:
    event = {"ts": fields.pop("ts", iso_utc(datetime.now(timezone.utc))), "job": "reddit-3am",
             "run_id": fields.pop("run_id", RUN_ID), "attempt": fields.pop("attempt", 1), "event": name}
    event.update(fields)
    return event


class Server:
    """A threaded loopback HTTP server that records every request and answers from a script."""

    def __init__(self, replies=(), default=200, echo_path=False, location=None, headers=None):
        self.requests: list[dict] = []
        self.replies = list(replies)       # status codes (or "sleep") for the first requests, in order
        self.default = default
        self.echo_path = echo_path         # put the request path in the response body (a leaky server)
        self.location = location           # Location header of 3xx replies
        self.headers = dict(headers or {})  # sent with every reply
        self.release = threading.Event()   # set at teardown: sleeping handlers return
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with outer.lock:
                    outer.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                           "body": body, "at": time.monotonic()})
                    reply = outer.replies.pop(0) if outer.replies else outer.default
                if reply == "sleep":
                    outer.release.wait(60)
                    reply = 200
                data = (self.path if outer.echo_path else "OK").encode()
                try:
                    self.send_response(reply)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    if outer.location:
                        self.send_header("Location", outer.location)
                    for key, value in outer.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def got(self, n: int, timeout: float = 5.0) -> list[dict]:
        wait_for(lambda: len(self.requests) >= n, timeout, f"{n} request(s) at port {self.port}")
        return list(self.requests)

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Harness:
    """Builds Alerters whose alert_failed records land in a list; closes them all at teardown."""

    def __init__(self):
        self.records: list[dict] = []
        self.delivered: list[dict] = []
        self.tail = b"line 1\nline 2\nlast line of output\n"
        self.alerters: list[Alerter] = []

    def output_tail(self, n: int) -> bytes:
        return self.tail[-n:]

    def make(self, **kw) -> Alerter:
        args = dict(job="reddit-3am", alert_cmd=None, webhooks=[], webhook_format="json", alert_on=None,
                    ping_url=None, record=self.records.append, output_tail=self.output_tail, backoff_s=0.02,
                    delivered=self.delivered.append)
        args.update(kw)
        alerter = Alerter(**args)
        self.alerters.append(alerter)
        return alerter

    def wait_records(self, n: int, timeout: float = 5.0) -> list[dict]:
        wait_for(lambda: len(self.records) >= n, timeout, f"{n} alert_failed record(s)")
        return list(self.records)


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def json_body(request: dict) -> dict:
    return json.loads(request["body"].decode())
