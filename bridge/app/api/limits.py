"""ASGI middleware that refuses oversized request bodies with 413 before any handler reads them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


async def _reply_413(send: Send, limit: int) -> None:
    body = json.dumps({"error": "too_large", "reason": f"request body exceeds {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    def __init__(self, app: ASGIApp, limit: int, on_reject: Callable[[], None] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            if self.on_reject:
                self.on_reject()
            await _reply_413(send, self.limit)
            return
        seen = 0
        started = False
        overflowed = False

        async def limited_receive() -> Message:
            nonlocal seen, overflowed
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    overflowed = True
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if overflowed and not started:
                return  # the framework turned BodyTooLarge into its own 400; the answer is our 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            pass
        if overflowed:
            if self.on_reject:
                self.on_reject()
            if not started:
                await _reply_413(send, self.limit)


class JsonTextGuard:
    """Lone surrogates and C0 controls written as JSON escapes (`"\\ud800"`, `"\\u000b"`) are valid JSON but
    not valid text: UTF-8 cannot encode the first (a 500 wherever the body is stored or re-serialised) and
    XML cannot carry the second. For JSON bodies that contain an escape, they are cleaned here, before any
    adapter parses the body (bridge.core.text; the models clean again at their own boundary).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        signed = any(b"signature" in name for name in headers)  # Alexa, the relay: never alter a signed body
        if signed or b"json" not in headers.get(b"content-type", b"") or scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = _clean_json(b"".join(chunks))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if b"content-length" in headers:
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [
                (b"content-length", str(len(body)).encode())
            ]
        await self.app(scope, replay, send)


def _clean_json(body: bytes) -> bytes:
    if b"\\u" not in body:
        return body
    from bridge.core.text import clean_value

    try:
        doc = json.loads(body)
    except ValueError:
        return body  # the framework answers 422 for it
    cleaned = clean_value(doc)
    if cleaned == doc:
        return body
    return json.dumps(cleaned, ensure_ascii=False).encode("utf-8")
