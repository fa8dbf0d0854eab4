"""The Lambda variant forwards to a bridge over HTTP ("relay"): same handlers, different gateway.

The Lambda runs the skill (`SkillBuilder.lambda_handler()`); where the web-service skill calls the
pipeline in-process, the Lambda's `HttpGateway` calls POST {alexa path}/relay/{op} on the bridge. Each
call is signed with a shared secret: HMAC-SHA256 over "<unix time>.<raw body>", accepted for 150 s.
The bridge keeps the only copy of the registry and the alert state; the Lambda holds no store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bridge.core.model import AlertState, Observation
from device_adapters.checkin.voice import Action
from skills.alexa.checkin import CheckinVoice
from skills.alexa.service import AlertOutcome, Identity, VoiceRejected, VoiceService, VoiceUnavailable

SIGNATURE_HEADER = "X-SOSBridge-Relay-Signature"
TIMESTAMP_HEADER = "X-SOSBridge-Relay-Timestamp"
MAX_SKEW_S = 150


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float) -> bool:
    if not timestamp or not signature:
        return False
    try:
        skew = abs(now - float(timestamp))
    except ValueError:
        return False
    return skew <= MAX_SKEW_S and hmac.compare_digest(sign(secret, timestamp, body), signature)


def _outcome(o: AlertOutcome | None) -> dict[str, Any] | None:
    if o is None:
        return None
    return {
        "alert_id": o.alert_id,
        "outcome": o.outcome,
        "state": o.state.value if o.state else None,
        "silent": o.silent,
        "latest_message": o.latest_message,
    }


def _parse_outcome(d: dict[str, Any] | None) -> AlertOutcome | None:
    if d is None:
        return None
    state = AlertState(d["state"]) if d.get("state") else None
    latest = d.get("latest_message")
    return AlertOutcome(d.get("alert_id"), d.get("outcome", ""), state, bool(d.get("silent")),
                        latest if isinstance(latest, str) else None)


def relay_router(path: str, secret: str, service: VoiceService, checkins: CheckinVoice) -> APIRouter:
    router = APIRouter()

    @router.post(f"{path}/relay/{{op}}", include_in_schema=False)
    async def relay(op: str, request: Request) -> JSONResponse:
        body = await request.body()
        if not signature_ok(
            secret, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), body, time.time()
        ):
            return JSONResponse({"error": "bad relay signature"}, status_code=401)
        try:
            args = json.loads(body)
            if op == "identify":
                ident = await service.identify(
                    device=args.get("device"), user=args.get("user"), access_token=args.get("access_token")
                )
                return JSONResponse(ident.__dict__)
            if op == "raise":
                obs = Observation.model_validate(args["observation"])
                return JSONResponse(_outcome(await service.raise_alert(obs, float(args.get("wait_s", 0)))))
            if op == "cancel":
                res = await service.cancel(args["device_id"], "alexa", args.get("message_id"), args["reason"])
                return JSONResponse(_outcome(res))
            if op == "status":
                return JSONResponse({"status": _outcome(await service.status(args["device_id"], args.get("alert_id")))})
            if op == "innocuous":
                return JSONResponse({"innocuous": await service.innocuous(args["device_id"])})
            if op == "checkin":
                action = args["action"]
                if action not in ("start", "extend", "stop", "status"):
                    raise ValueError(action)
                minutes = args.get("minutes")
                speech = await checkins.say(args["device_id"], action, float(minutes) if minutes else None,
                                            args.get("code"), args.get("language"))
                return JSONResponse({"speech": speech})
            if op == "checkin_running":
                return JSONResponse({"running": await checkins.running(args["device_id"])})
        except VoiceRejected as exc:
            return JSONResponse({"error": "rejected", "code": exc.code, "reason": exc.reason}, status_code=422)
        except VoiceUnavailable:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        except (KeyError, ValueError, TypeError):
            return JSONResponse({"error": "bad request"}, status_code=400)
        return JSONResponse({"error": "unknown op"}, status_code=404)

    return router


class HttpGateway:
    """`Gateway` over the relay routes; used by the Lambda handler."""

    def __init__(self, bridge_url: str, secret: str, path: str = "/alexa", timeout_s: float = 15.0) -> None:
        self.base = bridge_url.rstrip("/") + path + "/relay/"
        self.secret = secret
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=2)

    def _call(self, op: str, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload, default=str).encode()
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(self.secret, ts, body),
        }
        try:
            resp = httpx.post(self.base + op, content=body, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise VoiceUnavailable(f"bridge unreachable: {exc}") from exc
        if resp.status_code == 422:
            data = resp.json()
            raise VoiceRejected(data.get("code", "invalid"), data.get("reason", "rejected"))
        if resp.status_code != 200:
            raise VoiceUnavailable(f"bridge answered {resp.status_code}")
        return resp.json()

    def identify(self, *, device: str | None, user: str | None, access_token: str | None) -> Identity:
        data = self._call("identify", {"device": device, "user": user, "access_token": access_token})
        return Identity(**data)

    def raise_alert(self, obs: Observation, wait_s: float) -> Future[AlertOutcome]:
        payload = {"observation": obs.model_dump(mode="json"), "wait_s": wait_s}
        def call() -> AlertOutcome:
            outcome = _parse_outcome(self._call("raise", payload))
            if outcome is None:
                raise VoiceUnavailable("bridge returned no outcome")
            return outcome

        return self._pool.submit(call)

    def cancel(self, device_id: str, message_id: str | None, reason: str) -> AlertOutcome:
        out = _parse_outcome(self._call("cancel", {"device_id": device_id, "message_id": message_id, "reason": reason}))
        assert out is not None
        return out

    def status(self, device_id: str, alert_id: str | None) -> AlertOutcome | None:
        return _parse_outcome(self._call("status", {"device_id": device_id, "alert_id": alert_id})["status"])

    def innocuous(self, device_id: str) -> bool:
        return bool(self._call("innocuous", {"device_id": device_id})["innocuous"])

    def checkin(self, device_id: str, action: Action, minutes: float | None, code: str | None,
                language: str | None) -> str:
        payload = {"device_id": device_id, "action": action, "minutes": minutes, "code": code, "language": language}
        return str(self._call("checkin", payload)["speech"])

    def checkin_running(self, device_id: str) -> bool:
        return bool(self._call("checkin_running", {"device_id": device_id})["running"])
