"""Outbound alerts (alert command, webhooks, healthchecks.io pings), in three rooms.

`mask` is a leaf anything may import (URL masking, URL checks); `messages` makes the texts (summaries,
chat formats, webhook and ping bodies); `delivery` sends them off the main thread (the `Alerter`).
This file imports none of them: `options` needs only `mask.url_problem` at parse time, and a cron
start must not pay for threading, subprocess or urllib.request before the first alert.
"""
