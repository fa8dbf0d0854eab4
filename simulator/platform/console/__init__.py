"""The operator console of the reference platform (`sosbridge receiver`, docs/operations/console.md).

One page at `/` with its script and style sheet, served from this package (no CDN: it works offline), and
routes for it under `/console/api`, all behind the receiver's control token like `GET /contacts`: a long
poll of what arrived and what the operator did; the bridge's own record of an alert (its real state and
whole conversation, whoever acted); acknowledge, and resolve with a reason; and a text message to the
person through the bridge's platform messages API.
The page itself carries no personal data: it asks for the control token and sends it as a bearer header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field


class ConsoleBackend(Protocol):
    """What the console needs of the platform (simulator/platform/receiver.py's `Receiver`)."""

    async def changes(
        self, since: int, activity_since: int, wait_s: float, gone: Callable[[], Awaitable[bool]] | None = None
    ) -> dict[str, Any]: ...

    async def send_message(
        self, alert_id: str, text: str, audible: bool = False, operator: str = "console"
    ) -> tuple[int, dict[str, Any]]: ...

    async def callback(
        self, alert_id: str, event: Literal["ack", "resolve"], note: str = "", operator: str = "receiver"
    ) -> int: ...

    async def bridge_view(self, alert_id: str) -> tuple[int, dict[str, Any]]: ...


ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
MAX_WAIT_S = 25.0
# The page loads only its own script and style and talks only to this receiver.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@cache
def asset(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


class Decision(BaseModel):
    note: str = Field(default="", max_length=500, description="Resolve needs one: why the alert is closed")


class OutgoingMessage(BaseModel):
    text: str = Field(min_length=1, max_length=4000, description="The bridge cleans and limits it (1000 chars)")
    audible: bool = False


def add_console(app: FastAPI, receiver: ConsoleBackend, guarded: list[Any]) -> None:
    @app.get("/", include_in_schema=False)
    async def console_page() -> HTMLResponse:
        return HTMLResponse(asset("index.html"), headers=HEADERS)

    @app.get("/console/{name}", include_in_schema=False)
    async def console_asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, detail="not found")
        return Response(asset(name), media_type=ASSETS[name], headers=HEADERS)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/console/api/changes", dependencies=guarded)
    async def changes(
        request: Request,
        since: int = Query(0, ge=0),
        activity_since: int = Query(0, ge=0),
        wait: float = Query(0.0, ge=0.0, le=MAX_WAIT_S),
    ) -> dict[str, Any]:
        return await receiver.changes(since, activity_since, wait, request.is_disconnected)

    @app.post("/console/api/alerts/{alert_id}/messages", dependencies=guarded)
    async def send_message(alert_id: str, body: OutgoingMessage) -> Response:
        status, answer = await receiver.send_message(alert_id, body.text, body.audible)
        if status == 0:
            return JSONResponse(
                status_code=502, content={"error": "bridge_unreachable", "reason": "the bridge did not answer"}
            )
        return JSONResponse(status_code=status, content=answer)

    @app.get("/console/api/alerts/{alert_id}/bridge", dependencies=guarded)
    async def bridge_view(alert_id: str) -> Response:
        status, answer = await receiver.bridge_view(alert_id)
        if status == 0:
            return JSONResponse(
                status_code=502, content={"error": "bridge_unreachable", "reason": "the bridge did not answer"}
            )
        return JSONResponse(status_code=status, content=answer)

    @app.post("/console/api/alerts/{alert_id}/{event}", dependencies=guarded)
    async def decide(alert_id: str, event: Literal["ack", "resolve"], body: Decision) -> Response:
        if event == "resolve" and not body.note.strip():
            return JSONResponse(status_code=422, content={"error": "reason_needed", "reason": "say why it is resolved"})
        status = await receiver.callback(alert_id, event, body.note.strip(), operator="console")
        return JSONResponse(status_code=200 if 200 <= status < 300 else 502 if status == 0 else status,
                            content={"alert_id": alert_id, "event": event, "bridge_status": status})
