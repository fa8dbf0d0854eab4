"""ASGI middleware that refuses oversized request bodies with 413 before any handler reads them, and
cleans JSON text escapes no text may carry. The lean `POST /v1/alerts` handler (bridge/app/api/lean.py)
applies the same rules through `read_body` and `json_text_guarded`/`clean_json_body`."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


async def reply_413(send: Send, limit: int) -> None:
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
        if declared_over(headers, self.limit):
            if self.on_reject:
                self.on_reject()
            await reply_413(send, self.limit)
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
                await reply_413(send, self.limit)


def declared_over(headers: dict[bytes, bytes], limit: int) -> bool:
    """The request declares a body over `limit` bytes (Content-Length)."""
    declared = headers.get(b"content-length")
    return declared is not None and declared.isdigit() and int(declared) > limit


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when the client went away first. BodyTooLarge past `limit` bytes."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def json_text_guarded(headers: dict[bytes, bytes], method: str) -> bool:
    """Whether `JsonTextGuard` cleans this request's body: a JSON body, not signed (Alexa, the relay:
    never alter a signed body), on a method that has one."""
    signed = any(b"signature" in name for name in headers)
    return not signed and b"json" in headers.get(b"content-type", b"") and method not in ("GET", "HEAD")


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
        if not json_text_guarded(headers, scope.get("method", "")):
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
        body = clean_json_body(b"".join(chunks))
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


def clean_json_body(body: bytes) -> bytes:
    """The body with lone surrogates and C0 controls written as escapes cleaned (unchanged without any)."""
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
