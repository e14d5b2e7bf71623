"""Credentials out of what people read: every URI that reaches an answer, a log line or the
terminal goes through here, so a PostgreSQL password in a tracking or registry URL never does."""

from __future__ import annotations

import re

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# scheme://[user[:password]@]host...: up to the first blank, quote or bracket, without the
# punctuation that ends a sentence.
URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{}]*[^\s'\"<>()\[\]{}.,;:]")
# What make_url cannot parse still loses the password between the user and the host.
USERINFO_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")
# Connection strings that are not URIs (Feast's Redis "host:port,password=...", libpq's
# "password=... host=...") carry it as a key=value pair.
PASSWORD_PAIR = re.compile(r"\b(password=)[^,&\s]+", re.IGNORECASE)
HIDDEN = "***"


def redact_uri(uri: str) -> str:
    """`uri` with its password replaced by ***, the rest (driver, user, host, database) kept."""
    try:
        return make_url(uri).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return USERINFO_PASSWORD.sub(rf"\1:{HIDDEN}@", uri)


def scrub(text: str) -> str:
    """`text` (an exception message, a readiness reason) with every URI in it redacted and
    every password=... pair hidden."""
    text = URI.sub(lambda found: redact_uri(found.group(0)), text)
    return PASSWORD_PAIR.sub(rf"\1{HIDDEN}", text)
