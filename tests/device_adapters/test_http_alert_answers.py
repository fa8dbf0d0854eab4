"""`POST /v1/alerts` answers exactly as the FastAPI route answered before the lean handler (issue 27 item 6).

tests/fixtures/http/alert_answers.json holds the status, body and chosen headers of each request below,
as the FastAPI route of commit 1c40f71 answered them (written by running this module as a script against
that commit: `python -m tests.device_adapters.test_http_alert_answers`). The lean ASGI handler must give
the same answer to every one: error codes and reasons, the order of the checks (a body that is not JSON
is refused before the token is looked at; a bad token before the fields are checked), the metric of each
refusal, and the rate limit on failed credentials. Real bridge and real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bridge.core.lifecycle import DEVICE_MESSAGES
from bridge.core.model import AlertState, Person
from tests.support.bridges import BridgeEnv, running_bridge

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "http" / "alert_answers.json"
GOOD = "good-token-0123456789abcdef"
WRONG_TRANSPORT = "z2m-token-0123456789abcdef"
WEARABLE = "wear-token-0123456789abcdef"
JSON = "application/json"
FULL = {"kind": "fall", "silent": True, "severity": "extreme", "message_id": "m-full", "language": "pl",
        "occurred_at": "2026-01-01T10:00:00Z", "attributes": {"battery": 80, "x": None, "ok": True, "f": 1.5},
        "location": {"lat": 56.79, "lon": -5.0, "accuracy_m": 7.5, "altitude_m": 12, "source": "wifi",
                     "fix_time": "2026-01-01T09:59:00Z"}}


def j(value: Any) -> bytes:
    return json.dumps(value).encode()


# (name, authorization header or None, content type or None, body)
CASES: list[tuple[str, str | None, str | None, bytes]] = [
    ("minimal", f"Bearer {GOOD}", JSON, j({"kind": "sos"})),
    ("full", f"Bearer {GOOD}", JSON, j(FULL)),
    ("full again: duplicate", f"Bearer {GOOD}", JSON, j(FULL)),
    ("lower-case scheme", f"bearer {GOOD}", JSON, j({"kind": "medical", "message_id": "m-lc"})),
    ("json suffix type", f"Bearer {GOOD}", "application/vnd.sos+json", j({"kind": "panic", "message_id": "m-v"})),
    ("charset parameter", f"Bearer {GOOD}", "application/json; charset=latin-1",
     j({"kind": "sos", "message_id": "m-c"})),
    ("utf-16 body", f"Bearer {GOOD}", JSON, json.dumps({"kind": "sos", "message_id": "m-16"}).encode("utf-16")),
    ("escaped control characters cleaned", f"Bearer {GOOD}", JSON,
     b'{"kind":"sos","message_id":"m-\\u000b1","attributes":{"n":"a\\ud800b"}}'),
    ("no credential", None, JSON, j({"kind": "sos"})),
    ("unknown token", "Bearer not-a-token-0123456789", JSON, j({"kind": "sos"})),
    ("basic scheme", f"Basic {GOOD}", JSON, j({"kind": "sos"})),
    ("bearer without a token", "Bearer", JSON, j({"kind": "sos"})),
    ("not json, no credential", None, JSON, b"{kind: sos"),
    ("not json", f"Bearer {GOOD}", JSON, b"{kind: sos"),
    ("not utf-8", f"Bearer {GOOD}", JSON, b'{"kind": "\xff\xfe"}'),
    ("empty body", f"Bearer {GOOD}", JSON, b""),
    ("empty body, no credential", None, JSON, b""),
    ("text/plain", f"Bearer {GOOD}", "text/plain", j({"kind": "sos"})),
    ("no content type", f"Bearer {GOOD}", None, j({"kind": "sos"})),
    ("form type", f"Bearer {GOOD}", "application/x-www-form-urlencoded", b"kind=sos"),
    ("json array", f"Bearer {GOOD}", JSON, j([1, 2, 3])),
    ("json null", f"Bearer {GOOD}", JSON, b"null"),
    ("json string", f"Bearer {GOOD}", JSON, b'"sos"'),
    ("invalid field, bad token", "Bearer nope-0123456789abcdef", JSON, j({"kind": "nope"})),
    ("unknown kind", f"Bearer {GOOD}", JSON, j({"kind": "nope"})),
    ("missing kind", f"Bearer {GOOD}", JSON, j({"silent": True})),
    ("unknown field", f"Bearer {GOOD}", JSON, j({"kind": "sos", "colour": "red"})),
    ("four errors", f"Bearer {GOOD}", JSON, j({"kind": 1, "silent": "x", "severity": 2, "language": 3})),
    ("latitude out of range", f"Bearer {GOOD}", JSON, j({"kind": "sos", "location": {"lat": 91, "lon": 0}})),
    ("NaN latitude", f"Bearer {GOOD}", JSON, b'{"kind": "sos", "location": {"lat": NaN, "lon": 0}}'),
    ("huge number", f"Bearer {GOOD}", JSON, b'{"kind": "sos", "location": {"lat": 1, "lon": 1, "accuracy_m": '
     + b"1" * 400 + b"}}"),
    ("location extra field", f"Bearer {GOOD}", JSON, j({"kind": "sos", "location": {"lat": 1, "lon": 1, "z": 1}})),
    ("bad timestamp", f"Bearer {GOOD}", JSON, j({"kind": "sos", "occurred_at": "yesterday"})),
    ("long message id", f"Bearer {GOOD}", JSON, j({"kind": "sos", "message_id": "x" * 129})),
    ("empty message id", f"Bearer {GOOD}", JSON, j({"kind": "sos", "message_id": ""})),
    ("bad language", f"Bearer {GOOD}", JSON, j({"kind": "sos", "language": "<script>"})),
    ("long attribute", f"Bearer {GOOD}", JSON, j({"kind": "sos", "attributes": {"a": "x" * 257}})),
    ("too many attributes", f"Bearer {GOOD}", JSON, j({"kind": "sos", "attributes": {str(i): i for i in range(33)}})),
    ("nested attribute", f"Bearer {GOOD}", JSON, j({"kind": "sos", "attributes": {"a": {"b": 1}}})),
    ("oversized body", f"Bearer {GOOD}", JSON, j({"kind": "sos", "attributes": {"a": "x" * 40000}})),
    ("deep nesting", f"Bearer {GOOD}", JSON, b"[" * 5000 + b"]" * 5000),
    ("profile of another transport", f"Bearer {WRONG_TRANSPORT}", JSON, j({"kind": "sos"})),
    ("kind the profile does not declare", f"Bearer {WEARABLE}", JSON, j({"kind": "check_in_missed"})),
    ("kind the profile declares", f"Bearer {WEARABLE}", JSON, j({"kind": "fall", "message_id": "w-1"})),
    *[(f"guess {i}", f"Bearer guess-{i:02d}-0123456789abcdef", JSON, j({"kind": "sos"})) for i in range(18)],
    ("valid token while the source is limited", f"Bearer {GOOD}", JSON, j({"kind": "sos", "message_id": "m-ok"})),
    ("over the failed-credential limit", "Bearer guess-x-0123456789abcdef", JSON, j({"kind": "sos"})),
]
HEADERS = ("content-type", "www-authenticate", "retry-after")
METRIC = "sosbridge_alerts_rejected_total"


def normalise(body: Any) -> Any:
    """An accepted alert's id, and its state (it moves on as the receiver acknowledges), vary by run."""
    if isinstance(body, dict) and isinstance(body.get("alert_id"), str):
        assert body["state"] is None or body["message"] == DEVICE_MESSAGES[AlertState(body["state"])]
        return body | {"alert_id": "<alert id>", "state": "<state>", "message": "<message>"}
    return body


async def answers(env: BridgeEnv) -> dict[str, Any]:
    await env.add_device("dev", token=GOOD, person=Person(name="Dev", language="en-GB"))
    await env.add_device("z2m", token=WRONG_TRANSPORT, profile_id="zigbee2mqtt-tuya-ts0215a-sos")
    await env.add_device("wear", token=WEARABLE, profile_id="sosbridge-http-wearable")
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=env.url, timeout=10) as c:
        for name, auth, ctype, body in CASES:
            headers = {k: v for k, v in (("authorization", auth), ("content-type", ctype)) if v is not None}
            r = await c.post("/v1/alerts", content=body, headers=headers)
            out[name] = {"status": r.status_code, "body": normalise(r.json()),
                         "headers": {h: "<seconds>" if h == "retry-after" else r.headers[h]
                                     for h in HEADERS if h in r.headers}}
        metrics = (await c.get("/metrics")).text
    out["metrics"] = sorted(line for line in metrics.splitlines() if line.startswith(METRIC + "{"))
    return out


async def test_post_alert_answers_are_unchanged(tmp_path: Path) -> None:
    expected = json.loads(FIXTURE.read_text())
    async with running_bridge(tmp_path) as env:
        got = await asyncio.wait_for(answers(env), 60)
    for name, *_ in CASES:
        assert got[name] == expected[name], name
    assert got["metrics"] == expected["metrics"]


if __name__ == "__main__":  # writes the fixture from the code in this checkout (see the docstring)
    async def write() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with running_bridge(Path(tmp)) as env:
                doc = await asyncio.wait_for(answers(env), 60)
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {FIXTURE}", file=sys.stderr)

    asyncio.run(write())
