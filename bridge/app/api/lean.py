"""Lean routes: documented through FastAPI (OpenAPI, `/docs`), served by a plain ASGI handler.

FastAPI's work per request (its middleware stack, routing over every route, dependency solving, the
body validated through a TypeAdapter, the response built twice) cost more than the rest of the HTTP
path for `POST /v1/alerts` (docs/testing/benchmarks.md, "HTTP ingress"). A hot route keeps its FastAPI
declaration, which the OpenAPI document and `/docs` are built from, and names the handler that serves it:

- `served_by(handler)` on the declared endpoint; `lean_routes(router)` collects (method, path) → handler;
- `BridgeApp` (the FastAPI app) hands those requests straight to their handler;
- `LeanRequest` and `read_request`: the request's headers, source and body, with the body limit (413)
  and JSON text cleaning the middleware apply elsewhere (bridge/app/api/limits.py);
- `json_body`: the body as FastAPI would parse it (content-type rules, the same errors);
- `answer(send, runtime, work)`: runs the route's work and sends its JSON answer, or the error answer
  of bridge/app/api/errors.py (the one error shape), counting refusals as the app's handlers do.

A lean handler must answer every request exactly as its FastAPI declaration would
(tests/device_adapters/test_http_alert_answers.py holds one to that).
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from bridge.app.api.auth import bearer_from, scope_source
from bridge.app.api.errors import Answer, answer_for, error_body, validation_reason
from bridge.app.api.limits import BodyTooLarge, clean_json_body, declared_over, json_text_guarded, read_body, reply_413

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])

_LEAN = "__sosbridge_lean__"
MISSING: Any = object()  # no body at all (FastAPI: "Field required")


def served_by(handler: Handler) -> Callable[[F], F]:
    """Mark a route's declared endpoint as served by `handler` (see the module docstring)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _LEAN, handler)
        return endpoint

    return mark


def lean_routes(router: APIRouter) -> dict[tuple[str, str], Handler]:
    out: dict[tuple[str, str], Handler] = {}
    for route in router.routes:
        handler = getattr(getattr(route, "endpoint", None), _LEAN, None)
        if isinstance(route, APIRoute) and handler is not None:
            out.update({(method, route.path): handler for method in route.methods or ()})
    return out


class BridgeApp(FastAPI):
    """The bridge's FastAPI app: requests to a lean route go straight to its handler."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lean: dict[tuple[str, str], Handler] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (handler := self.lean.get((scope["method"], scope["path"]))) is not None:
            await handler(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


@dataclass(frozen=True)
class LeanRequest:
    headers: dict[bytes, bytes]  # names lower-case (ASGI); the first of a repeated header
    body: bytes
    source: str  # the client's address (after trusted proxy headers)

    @property
    def bearer(self) -> str | None:
        return bearer_from(self.headers.get(b"authorization", b"").decode("latin-1"))


async def read_request(scope: Scope, receive: Receive, send: Send, limit: int,
                       on_too_large: Callable[[], None]) -> LeanRequest | None:
    """The request, or None when it was answered already (413) or the client went away."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value)
    try:
        if declared_over(headers, limit):
            raise BodyTooLarge
        body = await read_body(receive, limit)
    except BodyTooLarge:
        on_too_large()
        await reply_413(send, limit)
        return None
    if body is None:
        return None
    if body and json_text_guarded(headers, scope["method"]):
        body = clean_json_body(body)
    return LeanRequest(headers, body, scope_source(scope.get("client")))


class InvalidBody(Exception):
    """422 with the validation errors' reason."""

    def __init__(self, errors: list[Any]) -> None:
        super().__init__(validation_reason(errors))
        self.errors = errors


class UnreadableBody(Exception):
    """400: a JSON body that is not text (bad UTF-8) or nested too deep to parse."""


@lru_cache(maxsize=64)
def is_json_type(content_type: str) -> bool:
    """`application/json` or `application/*+json`, parameters allowed (FastAPI's rule). Pure."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def json_body(req: LeanRequest) -> Any:
    """The body as FastAPI hands it to validation: MISSING when empty, the parsed document for a JSON
    content type, else the bytes (which no model accepts). orjson first; whatever it refuses is parsed as
    the standard library would (NaN, numbers beyond 64 bits, UTF-16), with its errors."""
    if not req.body:
        return MISSING
    content_type = req.headers.get(b"content-type")
    if content_type is None or not is_json_type(content_type.decode("latin-1")):
        return req.body
    try:
        return orjson.loads(req.body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(req.body)
    except json.JSONDecodeError as exc:
        raise InvalidBody([{"loc": ("body", exc.pos), "msg": "JSON decode error"}]) from exc
    except (ValueError, RecursionError) as exc:  # not UTF-8/16/32 text; nested too deep
        raise UnreadableBody from exc


def missing_body() -> InvalidBody:
    return InvalidBody([{"loc": ("body",), "msg": "Field required"}])


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    raw = orjson.dumps(body)
    head = [(b"content-length", str(len(raw)).encode()), (b"content-type", b"application/json")]
    head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


async def answer(send: Send, runtime: Any, work: Callable[[], Awaitable[Answer]]) -> None:
    """Run `work` and send its answer; a refusal it raises is answered as the app's handlers answer it
    (and a body refused here is counted as `invalid_body`, as theirs count it)."""
    try:
        result = await work()
    except InvalidBody as exc:
        runtime.metrics.rejected("http", "invalid_body")
        result = Answer(422, error_body("invalid", str(exc)))
    except UnreadableBody:
        runtime.metrics.rejected("http", "invalid_body")
        result = Answer(400, error_body("invalid_body", "There was an error parsing the body"))
    except Exception as exc:
        refusal = answer_for(exc)
        if refusal is None:
            raise
        result = refusal
    await send_json(send, result.status, result.body, result.headers)
