"""Masking secrets in command lines shown in incidents: URL credentials and values of secret-named options."""
from __future__ import annotations

import re

MASK = "***"
ARG_MAX_CHARS = 1000    # one argument, once masked, is cut beyond this
ARGV_MAX_CHARS = 4000   # a whole command line

# Words that make an option, variable or header name secret. `key`, `pass` and `pw` only as a whole
# part of the name (`API_KEY`, `--key`, `ssh-pass`), not inside a word (`monkey`, `--keyfile`,
# `compass`); `auth` and `authorization`, but not `author` or `authority`.
_SECRET_WORD = re.compile(
    r"token|secret|passw(?:or)?d|passphrase|credential|cookie|auth(?!or(?:s|ed)?(?:$|[^a-z])|orit)"
    r"|api[-_.]?key|private[-_.]?key"
    r"|(?:^|[-_.])(?:key|pass|pw)(?:$|[-_.])", re.IGNORECASE)
# ... unless the value is where the secret lives, not the secret: `--token-file PATH`, `--no-password`
_NOT_A_VALUE = re.compile(r"(?:^no-)|(?:[-_.](?:file|path|dir|fd|env)$)", re.IGNORECASE)

_URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_VALUE = r"(\"[^\"]*\"|'[^']*'|[^\s&;'\",]+)"
# NAME=VALUE and --NAME=VALUE anywhere in an argument (env assignments, `sh -c` scripts, query strings)
_ASSIGNMENT = re.compile(r"(?<![\w-])(-{0,2}[A-Za-z_][A-Za-z0-9_.-]*)=" + _VALUE)
# "NAME": "VALUE" (JSON bodies passed to curl -d)
_JSON_PAIR = re.compile(r"\"([A-Za-z_][A-Za-z0-9_.-]*)\"\s*:\s*\"([^\"]*)\"")
# Name: [Bearer|Basic|Token] VALUE (HTTP headers)
_HEADER = re.compile(r"(?<![\w-])([A-Za-z][A-Za-z0-9-]*):[ \t]*((?:Bearer|Basic|Token|Digest)[ \t]+)?" + _VALUE)
# --NAME VALUE inside one argument that holds a whole script (`sh -c "tool --token abc"`)
_SPACED_OPTION = re.compile(r"(?<!\S)(--?[A-Za-z][A-Za-z0-9_.-]*)(\s+)(\"[^\"]*\"|'[^']*'|[^\s\"'-]\S*)")


def secret_name(name: str) -> bool:
    """Is `name` (an option, variable or header name) one whose value must not be shown?"""
    bare = name.lstrip("-")
    return bool(bare) and not _NOT_A_VALUE.search(bare) and bool(_SECRET_WORD.search(bare))


def _sub_if_secret(pattern: re.Pattern[str], text: str, name_group: int, value_group: int) -> str:
    def repl(m: re.Match[str]) -> str:
        if not secret_name(m.group(name_group)):
            return m.group(0)
        start, end = m.span(value_group)
        base = m.start(0)
        whole = m.group(0)
        return whole[:start - base] + MASK + whole[end - base:]
    return pattern.sub(repl, text)


def mask_text(text: str, secrets=()) -> str:
    """One argument (or any text) with credentials in URLs and the values of secret-named things masked."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    if "@" in text:
        text = _URL_CREDENTIALS.sub(r"\1" + MASK + "@", text)
    if not _SECRET_WORD.search(text):  # every other rule needs a secret-named thing
        return text
    text = _sub_if_secret(_ASSIGNMENT, text, 1, 2)
    text = _sub_if_secret(_JSON_PAIR, text, 1, 2)
    text = _sub_if_secret(_HEADER, text, 1, 3)
    if any(c.isspace() for c in text):
        text = _sub_if_secret(_SPACED_OPTION, text, 1, 3)
    return text


def mask_argv(argv: list[str], secrets=()) -> list[str]:
    """A command line fit to show: secrets masked, each argument and the whole bounded in length.

    Besides `mask_text` on every argument: the argument after a secret-named option without `=`
    (`--token abc`, `--password abc`) and after `-p` (`mysql -p secret`) is masked, unless it is an
    option itself. `secrets` are exact strings (webhook URLs, ...) replaced wherever they occur.
    """
    out: list[str] = []
    total = 0
    mask_next = False
    for i, arg in enumerate(argv):
        shown = MASK if mask_next and not arg.startswith("-") else mask_text(arg, secrets)
        mask_next = arg == "-p" or (arg.startswith("-") and "=" not in arg and " " not in arg and secret_name(arg))
        if len(shown) > ARG_MAX_CHARS:
            shown = shown[:ARG_MAX_CHARS] + f"...({len(shown) - ARG_MAX_CHARS} more chars)"
        if total + len(shown) > ARGV_MAX_CHARS:
            out.append(f"...({len(argv) - i} more arguments)")
            break
        out.append(shown)
        total += len(shown) + 1
    return out
