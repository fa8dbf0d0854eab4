"""Genuine Alexa request envelopes from tests/fixtures/alexa, made current and signed.

Each sample's sources are listed in tests/fixtures/alexa/SOURCES.md (jovotech/jovo-framework,
alexa-js/alexa-app, alexa/alexa-skills-kit-sdk-for-java). Rewrites applied here, and only these:
request.timestamp → now (the samples date from 2015-2021 and would fail the 150 s rule), requestId → a
fresh id (real request ids are unique; the bridge dedupes on them), apiEndpoint → the loopback stand-in
for Amazon, and where a test says so, the intent name / confirmation status.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.paths import FIXTURES

from .ca import CERT_URL, Leaf

SAMPLES = FIXTURES / "alexa"


def load(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text())


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def current(
    envelope: dict[str, Any],
    *,
    api_endpoint: str | None = None,
    intent: str | None = None,
    confirmation: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    env = copy.deepcopy(envelope)
    now = now or datetime.now(UTC)
    request = env["request"]
    request["timestamp"] = iso(now)
    request["requestId"] = f"amzn1.echo-api.request.{uuid.uuid4()}"
    if intent is not None:
        request.setdefault("intent", {"slots": {}})["name"] = intent
    if confirmation is not None:
        request["intent"]["confirmationStatus"] = confirmation
    system = (env.get("context") or {}).get("System")
    if system is not None and api_endpoint is not None and "apiEndpoint" in system:
        trailing = "/" if system["apiEndpoint"].endswith("/") else ""
        system["apiEndpoint"] = api_endpoint + trailing
    geo = (env.get("context") or {}).get("Geolocation")
    if geo is not None:
        # Keep the sample's relation: the fix was taken 5 s before the request.
        geo["timestamp"] = iso(now - timedelta(seconds=5))
    return env


def signed(leaf: Leaf, envelope: dict[str, Any] | bytes, cert_url: str = CERT_URL) -> tuple[bytes, dict[str, str]]:
    body = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    headers = {
        "Content-Type": "application/json",
        "SignatureCertChainUrl": cert_url,
        "Signature-256": leaf.sign(body),
    }
    return body, headers


def app_id(envelope: dict[str, Any]) -> str:
    return envelope["context"]["System"]["application"]["applicationId"] if envelope.get("context") else (
        envelope["session"]["application"]["applicationId"]
    )
