"""Issue 14 item 7: control characters and lone surrogates never reach a renderer or the store.

Hypothesis writes registry text (names, needs, notes, addresses) with every code point, surrogates and C0
controls included; every renderer's output must then be well-formed (XML parses, JSON encodes as UTF-8).
Then the same over real HTTP: a registered name with a vertical tab still gives a valid CAP contact, and
a lone surrogate in an alert body is an accepted alert, not a 500.
"""

from __future__ import annotations

import json
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.model import Device, Person
from bridge.delivery.formats import render
from tests.support.bridges import running_bridge
from tests.support.formats_factory import contact, device

# Every code point, surrogates (Cs) and controls (Cc) included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


def registry_device(name: str, need: str, notes: str, street: str) -> Device:
    """What the registry holds after registration (POST /v1/devices validates a Device like this)."""
    doc = device().model_dump(mode="json")
    doc["label"] = name
    doc["person"] = {"name": name, "communication_needs": [need], "vulnerability_notes": notes, "language": "gd"}
    doc["registered_address"]["civic"]["a6"] = street
    return Device.model_validate(doc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=ANY_TEXT, need=ANY_TEXT, notes=ANY_TEXT, street=ANY_TEXT)
def test_every_renderer_is_well_formed_whatever_the_registry_holds(
    name: str, need: str, notes: str, street: str
) -> None:
    c = contact(dev=registry_device(name, need, notes, street))
    body, _ = render(c, "json")
    json.loads(body.decode("utf-8"))
    for fmt in ("cap", "pidf"):
        xml, _ = render(c, fmt)  # type: ignore[arg-type]
        ET.fromstring(xml)  # well-formed, or ParseError
    eido, _ = render(c, "eido")
    doc = json.loads(eido.decode("utf-8"))
    assert doc


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", "Morag\u000bMacLeod", "MoragMacLeod"),
        ("name", "nul\u0000byte", "nulbyte"),
        ("name", "tab\tstays", "tab\tstays"),
        ("name", "half \ud83d pair", "half \ufffd pair"),
        ("vulnerability_notes", "esc\u001b[2J", "esc[2J"),
    ],
)
def test_model_boundary_cleans_text(field: str, value: str, expected: str) -> None:
    person = Person.model_validate({field: value})
    assert getattr(person, field) == expected


async def test_control_character_in_a_registered_name_still_gives_a_valid_cap_contact(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, platform_format="cap") as env:
        admin = {"Authorization": f"Bearer {env.settings.admin_token}"}
        token = secrets.token_urlsafe(24)
        registration = {
            "device_id": "pendant-7",
            "token": token,
            "person": {"name": "Morag\u000bMacLeod", "language": "gd"},
            "registered_address": {"lat": 58.2094, "lon": -6.3849, "source": "registered_address"},
        }
        async with httpx.AsyncClient(base_url=env.url) as c:
            assert (await c.post("/v1/devices", json=registration, headers=admin)).status_code == 201
            r = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 202
        records = await env.receiver.wait_for(lambda cs: len(cs) == 1)
        assert env.receiver.receiver.records[0]["valid"], env.receiver.receiver.records[0]["errors"]
        assert "MoragMacLeod" in (env.receiver.receiver.records[0]["body"] or "")
        assert records


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind": "sos", "message_id": "m-\\ud800"}',
        b'{"kind": "sos", "attributes": {"note": "\\udfff\\u0007"}}',
        b'{"kind": "sos", "language": "gd\\u000b"}',
    ],
)
async def test_lone_surrogates_and_controls_in_an_alert_are_not_a_500(tmp_path: Path, raw: bytes) -> None:
    async with running_bridge(tmp_path) as env:
        token = await env.add_device("pendant-7b")
        async with httpx.AsyncClient(base_url=env.url) as c:
            r = await c.post(
                "/v1/alerts",
                content=raw,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
        assert r.status_code in (202, 422), r.text
        if r.status_code == 202:
            records = await env.receiver.wait_for(lambda cs: len(cs) == 1)
            assert records[0]["kind"] == "sos"
