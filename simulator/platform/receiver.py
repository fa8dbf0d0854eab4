"""The reference contact platform (`sosbridge receiver`).

It verifies each webhook's signature, validates the body (our JSON envelope, CAP or EIDO), stores each
contact as one JSON line, answers 2xx, and calls the bridge back with ack and resolve — automatically
after a configurable delay, or on command. Fault modes (down, slow) let testers rehearse outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from bridge.delivery.sinks.signing import (
    DEFAULT_TOLERANCE_S,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    check,
)
from bridge.infra.private_files import private_file

log = logging.getLogger("sosbridge.receiver")

Mode = Literal["normal", "down", "slow"]
ContactPredicate = Callable[[list[dict[str, Any]]], bool]


def _validate(body: bytes, content_type: str) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse our JSON envelope directly; hand CAP/EIDO to the standards validators."""
    if content_type.startswith("application/json") and b'"sosbridge.contact/1"' in body:
        from pydantic import ValidationError

        from bridge.core.contact import Contact

        try:
            contact = Contact.model_validate_json(body)
        except ValidationError as exc:
            return None, [str(exc)[:500]]
        return json.loads(contact.to_json()), []
    try:
        from bridge.delivery.formats import parse_incoming, validate
    except ImportError:
        return None, [f"no validator for {content_type}"]
    errors = validate(body, content_type)
    return parse_incoming(body, content_type), errors


class Receiver:
    def __init__(
        self,
        secret: str,
        jsonl_path: str | Path | None = None,
        bridge_url: str | None = None,
        platform_token: str | None = None,
        auto_ack_s: float | None = 0.5,
        auto_resolve_s: float | None = None,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        control_token: str | None = None,
        keep_raw: bool = False,
    ) -> None:
        self.secret = secret
        # Every webhook request as it arrived (headers, raw body), in memory, when asked: the docs-sample
        # tests verify signatures on them as a platform would.
        self.raw_requests: list[tuple[dict[str, str], bytes]] | None = [] if keep_raw else None
        self.tolerance_s = tolerance_s  # signatures older (or newer) than this are refused as replays
        self.control_token = control_token  # when set, GET /contacts and /control/* need it as a bearer token
        self.jsonl_path = Path(jsonl_path) if jsonl_path else None
        self.bridge_url = bridge_url.rstrip("/") if bridge_url else None
        self.platform_token = platform_token
        self.auto_ack_s = auto_ack_s
        self.auto_resolve_s = auto_resolve_s
        self.records: list[dict[str, Any]] = []
        self._contacts: list[dict[str, Any]] = []  # the parsed contacts of `records`, kept in step
        self.seen_keys: dict[str, int] = {}
        self.mode: Mode = "normal"
        self.slow_s = 5.0
        self.rejected = 0
        # What the operator (or the auto-ack) did: ack, resolve and messages sent, for the console (in memory).
        self.activity: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        if self.jsonl_path is not None and self.jsonl_path.exists():
            for line in self.jsonl_path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    record = json.loads(line)
                    self._keep(record)
                    key = record.get("idempotency_key") or ""
                    self.seen_keys[key] = self.seen_keys.get(key, 0) + 1

    @property
    def contacts(self) -> list[dict[str, Any]]:
        return self._contacts

    async def first(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first contact matching `pred`, waiting for it to arrive; TimeoutError otherwise."""
        found = await self.wait_for(lambda cs: any(pred(c) for c in cs), timeout)
        return next(c for c in found if pred(c))

    def _keep(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if record.get("contact"):
            self._contacts.append(record["contact"])

    def reset(self) -> int:
        """Forget what was received (bench runs reuse one receiver)."""
        n = len(self.records)
        self.records.clear()
        self._contacts.clear()
        self.seen_keys.clear()
        self.activity.clear()
        self.rejected = 0
        return n

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until predicate(contacts) holds; returns the contacts, raises TimeoutError otherwise."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.contacts)), timeout)
        return self.contacts

    def _append(self, record: dict[str, Any]) -> None:
        if self.jsonl_path is None:
            return
        private_file(self.jsonl_path)  # contacts carry names and locations: 0600
        with open(self.jsonl_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    async def callback(
        self, alert_id: str, event: Literal["ack", "resolve"], note: str = "", operator: str = "receiver"
    ) -> int:
        status, _ = await self._call_bridge(alert_id, event, {"note": note, "operator": operator})
        await self._record_activity({"type": event, "alert_id": alert_id, "bridge_status": status, "by": operator})
        return status

    async def send_message(
        self, alert_id: str, text: str, audible: bool = False, operator: str = "console"
    ) -> tuple[int, dict[str, Any]]:
        """Text the person through the bridge's platform messages API; returns its status and answer."""
        body = {"text": text, "audible": audible, "operator": operator}
        status, answer = await self._call_bridge(alert_id, "messages", body)
        if status == 201:
            await self._record_activity({
                "type": "message", "alert_id": alert_id, "bridge_status": status, "by": operator,
                "text": answer.get("text", text), "message_id": answer.get("message_id"),
                "discreet": answer.get("discreet"), "audible": answer.get("audible"),
            })
        return status, answer

    async def bridge_view(self, alert_id: str) -> tuple[int, dict[str, Any]]:
        """The bridge's own record of the alert (`GET /v1/platform/alerts/{id}`): its real state, its
        history (who acknowledged or resolved it, every message both ways) and the registered address.
        The console shows this rather than only what it did itself."""
        if self.bridge_url is None or self._client is None or not self.platform_token:
            return 0, {}
        url = f"{self.bridge_url}/v1/platform/alerts/{alert_id}"
        try:
            response = await self._client.get(url, headers={"Authorization": f"Bearer {self.platform_token}"})
            answer = response.json()
        except (httpx.HTTPError, ValueError):
            return 0, {}
        return response.status_code, answer if isinstance(answer, dict) else {}

    async def _call_bridge(self, alert_id: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.bridge_url is None or self._client is None:
            return 0, {}
        if not self.platform_token:
            # Never the webhook secret instead: an HMAC key must not travel as a bearer token.
            log.warning("no platform token: not calling the bridge back", extra={"alert_id": alert_id})
            return 0, {}
        url = f"{self.bridge_url}/v1/platform/alerts/{alert_id}/{path}"
        headers = {"Authorization": f"Bearer {self.platform_token}"}
        for attempt in range(5):
            try:
                response = await self._client.post(url, json=body, headers=headers)
                if response.status_code < 500:
                    try:
                        answer = response.json()
                    except ValueError:
                        answer = {}
                    return response.status_code, answer if isinstance(answer, dict) else {}
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2 * (attempt + 1))
        return 0, {}

    async def _record_activity(self, entry: dict[str, Any]) -> None:
        async with self._changed:
            self.activity.append({"at": time.time(), **entry})
            self._changed.notify_all()

    async def changes(
        self, since: int, activity_since: int, wait_s: float, gone: Callable[[], Awaitable[bool]] | None = None
    ) -> dict[str, Any]:
        """Records and activity after the given positions, waiting up to `wait_s` for something new (the
        console's long poll; it stops early when `gone()` says the client went away). Positions beyond the
        end (after a reset) start again from 0."""
        reset = since > len(self.records) or activity_since > len(self.activity)
        if reset:
            since, activity_since = 0, 0

        def anything_new() -> bool:
            return len(self.records) > since or len(self.activity) > activity_since

        deadline = time.monotonic() + wait_s
        while not anything_new() and (left := deadline - time.monotonic()) > 0:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(anything_new), min(left, 0.5))
            if gone is not None and await gone():
                break
        return {
            "reset": reset,
            "records": [{"index": since + i, **r} for i, r in enumerate(self.records[since:])],
            "next": len(self.records),
            "activity": self.activity[activity_since:],
            "activity_next": len(self.activity),
        }

    def _schedule_callbacks(self, contact: dict[str, Any]) -> None:
        if contact.get("msg_type") != "alert" or not contact.get("alert_id"):
            return

        async def run() -> None:
            alert_id = contact["alert_id"]
            if self.auto_ack_s is not None:
                await asyncio.sleep(self.auto_ack_s)
                await self.callback(alert_id, "ack", "help is on the way")
            if self.auto_resolve_s is not None:
                await asyncio.sleep(self.auto_resolve_s)
                await self.callback(alert_id, "resolve", "resolved by the receiver")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, request: Request) -> JSONResponse:
        if self.mode == "down":
            return JSONResponse(status_code=503, content={"error": "down"}, headers={"Retry-After": "1"})
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        body = await request.body()
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if self.raw_requests is not None:
            self.raw_requests.append((dict(request.headers), body))
        try:
            check(body, self.secret, request.headers.get(SIGNATURE_HEADER), key, self.tolerance_s)
        except SignatureError as exc:
            self.rejected += 1
            return JSONResponse(status_code=401, content={"error": exc.code, "reason": exc.reason})
        content_type = request.headers.get("content-type", "application/json")
        contact, errors = _validate(body, content_type)
        duplicate = key in self.seen_keys
        self.seen_keys[key] = self.seen_keys.get(key, 0) + 1
        record = {
            "received_at": time.time(),
            "idempotency_key": key,
            "content_type": content_type,
            "valid": not errors,
            "errors": errors,
            "duplicate": duplicate,
            "contact": contact,
            "body": None if content_type.startswith("application/json") else body.decode("utf-8", "replace"),
        }
        await asyncio.to_thread(self._append, record)
        async with self._changed:
            self._keep(record)
            self._changed.notify_all()
        if contact is not None and not duplicate:
            self._schedule_callbacks(contact)
        if errors:
            return JSONResponse(status_code=422, content={"error": "invalid", "reason": "; ".join(errors)[:1000]})
        return JSONResponse(status_code=200, content={"status": "accepted", "duplicate": duplicate})

    def create_app(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            self._client = httpx.AsyncClient(timeout=5.0)
            try:
                yield
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await self._client.aclose()

        async def control_auth(request: Request) -> None:
            from bridge.app.security import control_request_refusal

            refusal = control_request_refusal(request.headers.get("host"), request.headers.get("origin"),
                                              self.control_token is not None)
            if refusal is not None:
                raise HTTPException(403, detail=refusal)
            if self.control_token is None:
                return
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            valid = hmac.compare_digest(token.strip().encode(), self.control_token.encode())
            if scheme.lower() != "bearer" or not valid:
                raise HTTPException(401, detail="a valid control bearer token is required")

        guarded = [Depends(control_auth)]
        app = FastAPI(title="SOS Bridge reference contact platform", lifespan=lifespan)

        @app.post("/contacts")
        async def contacts(request: Request) -> JSONResponse:
            return await self.handle(request)

        @app.get("/contacts", dependencies=guarded)
        async def list_contacts() -> list[dict[str, Any]]:
            return self.records

        @app.post("/control/mode/{mode}", dependencies=guarded)
        async def set_mode(mode: Mode, slow_s: float = 5.0) -> dict[str, Any]:
            self.mode, self.slow_s = mode, slow_s
            return {"mode": mode}

        @app.post("/control/{event}/{alert_id}", dependencies=guarded)
        async def control(event: Literal["ack", "resolve"], alert_id: str) -> dict[str, Any]:
            return {"alert_id": alert_id, "event": event, "bridge_status": await self.callback(alert_id, event)}

        from simulator.platform.console import add_console

        add_console(app, self, guarded)

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok", "mode": self.mode}

        return app


class EmbeddedReceiver:
    """`async with EmbeddedReceiver(secret=...) as rx:` runs the receiver on a free loopback port."""

    def __init__(self, secret: str, port: int = 0, host: str = "127.0.0.1", **kwargs: Any) -> None:
        from bridge.infra.serving import free_port

        self.receiver = Receiver(secret, **kwargs)
        self.host = host
        self.port = port or free_port(host)
        self._cm: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/contacts"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def contacts(self) -> list[dict[str, Any]]:
        return self.receiver.contacts

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        return await self.receiver.wait_for(predicate, timeout)

    async def first(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        return await self.receiver.first(pred, timeout)

    async def __aenter__(self) -> EmbeddedReceiver:
        from bridge.infra.serving import serve_app

        self._cm = serve_app(self.receiver.create_app(), self.host, self.port)
        await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(None, None, None)
