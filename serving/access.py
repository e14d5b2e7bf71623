"""Who may call the service: the API keys it accepts, decided once at start-up from the host it
listens on. Fail closed: only the embedded one-machine default (a loopback host) runs without a
key; a service reachable from other machines refuses to start without one."""

from __future__ import annotations

import logging

from features.errors import UserInputError
from features.settings import Settings

log = logging.getLogger(__name__)
# A key is a secret, not a password to remember: 16 characters is the least we take (generate
# one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`).
MIN_KEY_LENGTH = 16


def accepted_keys(settings: Settings) -> list[bytes]:
    """The keys an API call may send (any one of them; empty: no key needed). UserInputError,
    one line that never shows a key, when the host is not loopback and no key is set, or when
    a key is too short."""
    given = [settings.api_keys or "", settings.api_key or ""]
    keys = [key.strip() for value in given for key in value.split(",") if key.strip()]
    for position, key in enumerate(keys, start=1):
        if len(key) < MIN_KEY_LENGTH:
            raise UserInputError(
                f"API key {position} of OMNISHELF_API_KEYS/OMNISHELF_API_KEY is {len(key)} "
                f"characters; use at least {MIN_KEY_LENGTH} (python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
    if not keys and not settings.host.is_loopback:
        raise UserInputError(
            f"refusing to serve on {settings.host} without an API key: set OMNISHELF_API_KEYS "
            "(comma-separated keys), or OMNISHELF_HOST=127.0.0.1 to serve this machine only"
        )
    return [key.encode() for key in dict.fromkeys(keys)]


def announce(settings: Settings, keys: list[bytes]) -> None:
    """Say at start-up who may call: the embedded default runs open, which must be visible."""
    if keys:
        docs = "open" if settings.open_docs else "behind the key too"
        log.warning(
            "listening on %s; API calls need one of %d keys (X-API-Key); docs and /metrics %s",
            settings.host,
            len(keys),
            docs,
        )
    else:
        log.warning(
            "listening on %s (this machine only) without an API key: set OMNISHELF_API_KEYS "
            "before serving other machines",
            settings.host,
        )
