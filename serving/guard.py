"""What every request passes before the service sees it: an API key, when keys are configured
(serving/access.py decides), a cap on the body size, and no form bodies (the API takes JSON).
Probes stay open; the OpenAPI page and metrics are behind the key unless opened."""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

PROBES = frozenset({"/healthz", "/livez", "/readyz"})
# The OpenAPI page (BentoML serves it at / and /docs, its assets under /static_content/).
DOCS = frozenset({"/", "/metrics", "/docs", "/docs.json"})
DOCS_PREFIX = "/static_content/"
API_KEY_HEADER = "X-API-Key"
# A 10,000-pair restock batch is about 1 MB of JSON; anything much bigger is a mistake.
MAX_BODY_BYTES = 4 * 2**20
# BentoML parses these bodies as forms, and answers a malformed one with a 500.
FORM_TYPES = (b"multipart/", b"application/x-www-form-urlencoded")


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        keys: list[bytes],
        open_docs: bool = False,
        max_body_bytes: int = MAX_BODY_BYTES,
    ):
        self.app = app
        self.keys = keys
        self.open_docs = open_docs
        self.max_body_bytes = max_body_bytes

    def _open(self, path: str) -> bool:
        """Whether `path` is answered without a key."""
        docs = path in DOCS or path.startswith(DOCS_PREFIX)
        return path in PROBES or (self.open_docs and docs)

    def _key_matches(self, given: bytes) -> bool:
        # Each key compared in constant time, and every key compared, so the answer's timing
        # leaks neither a key nor which one matched.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(given, key)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope["headers"])
        refusal = None
        if self.keys and not self._open(path):
            given = headers.get(API_KEY_HEADER.lower().encode(), b"")
            if not self._key_matches(given):
                refusal = JSONResponse(
                    {
                        "error": f"missing or wrong {API_KEY_HEADER} header",
                        "field": API_KEY_HEADER,
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": API_KEY_HEADER},
                )
        length = headers.get(b"content-length", b"0")
        if refusal is None and (not length.isdigit() or int(length) > self.max_body_bytes):
            refusal = JSONResponse(
                {
                    "error": f"request body over {self.max_body_bytes} bytes "
                    f"(Content-Length {length.decode(errors='replace')})",
                    "field": "body",
                },
                status_code=413,
            )
        kind = headers.get(b"content-type", b"").strip().lower()
        if refusal is None and kind.startswith(FORM_TYPES) and path not in PROBES | DOCS:
            refusal = JSONResponse(
                {
                    "error": f"request body of Content-Type {kind.decode(errors='replace')}: "
                    "send JSON (Content-Type: application/json)",
                    "field": "Content-Type",
                },
                status_code=415,
            )
        if refusal is None and b"content-length" not in headers:
            # A chunked body says its size only by arriving: read it here, up to the cap.
            receive = await self._read_capped(receive)
            if receive is None:
                refusal = JSONResponse(
                    {
                        "error": f"request body over {self.max_body_bytes} bytes (chunked)",
                        "field": "body",
                    },
                    status_code=413,
                )
        if refusal is not None:
            return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _read_capped(self, receive: Receive) -> Receive | None:
        """The body, read whole unless it passes the cap (None then), handed on as one message."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: pass that on
                return _replay([message], receive)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                return _replay([body], receive)


def _replay(messages: list, receive: Receive) -> Receive:
    """A receive that first gives `messages`, then what the client sends next."""

    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed
