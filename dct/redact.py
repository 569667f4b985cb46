"""Passwords out of everything printed or stored: storage URLs are parsed with SQLAlchemy's `make_url`
(the parser that will open them), so a password holding '/', ':' or '#' is found whole, whatever it is."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
# A URL runs to the next blank or quote; make_url decides where its password is.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_KEY_PASSWORD = re.compile(r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<pw>[^&\s;'\"]+)", re.IGNORECASE)


def _redact_url(text: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        has_password = make_url(text).password is not None
    except (ArgumentError, ValueError):
        has_password = None  # not a URL SQLAlchemy reads: fall back to its grammar below
    head = text.index("://") + 3
    # make_url's grammar: user is [^:/]*, then ':' and a password that runs to the next '@'
    colon = text.find(":", head)
    at = text.find("@", colon + 1) if colon >= 0 else -1
    if colon < 0 or at < 0 or "/" in text[head:colon] or has_password is False:
        return text
    return f"{text[:colon + 1]}{REDACTED}{text[at:]}"


def redact(value: Any) -> Any:
    """The same value with passwords in URLs (and password=... pairs) replaced by ***, recursively."""
    if isinstance(value, str):
        if "://" in value:
            value = _URL.sub(lambda m: _redact_url(m.group(0)), value)
        return _KEY_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}", value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value
