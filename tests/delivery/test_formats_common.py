"""render()/validate()/parse_incoming() across all formats: every rendered contact validates, content types
route to the right validator, and the receiver's summary agrees with the contact."""

from __future__ import annotations

import pytest

from bridge.core.model import AlertKind
from bridge.delivery.formats import CONTENT_TYPES, FORMATS, options_from_settings, parse_incoming, render, validate
from bridge.delivery.formats.common import cap_time, rfc3339
from tests.support.formats_factory import BEN_NEVIS, REGISTERED, contact, gnss, no_location_contact


def _variants():  # type: ignore[no-untyped-def]
    yield "gnss", contact()
    yield "nevis-wide", contact(location=gnss(*BEN_NEVIS, accuracy_m=2500))
    yield "registered", contact(location=REGISTERED, kind=AlertKind.fall)
    yield "update", contact(msg_type="update", seq=2)
    yield "cancel", contact(msg_type="cancel", seq=3, reason="false alarm")
    yield "test-kind", contact(kind=AlertKind.test, status="test")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name,c", list(_variants()))
def test_every_variant_validates_in_every_format(fmt: str, name: str, c) -> None:  # type: ignore[no-untyped-def]
    body, ctype = render(c, fmt)  # type: ignore[arg-type]
    assert ctype == CONTENT_TYPES[fmt]
    assert validate(body, ctype) == [], (name, fmt)


@pytest.mark.parametrize("fmt", ["json", "cap", "eido"])
def test_parse_incoming_summary_matches_contact(fmt: str) -> None:
    c = contact(msg_type="cancel", seq=2, location=gnss(*BEN_NEVIS, accuracy_m=75))
    body, ctype = render(c, fmt)  # type: ignore[arg-type]
    summary = parse_incoming(body, ctype)
    assert summary is not None
    assert summary["alert_id"] == c.alert_id
    assert summary["contact_id"] == c.contact_id
    assert summary["msg_type"] == "cancel"
    assert summary["kind"] == "panic"
    assert summary["seq"] == 2
    assert summary["device"]["id"] == "pendant-0042"
    assert summary["location"]["lat"] == pytest.approx(BEN_NEVIS[0])
    assert summary["location"]["accuracy_m"] == pytest.approx(75)


def test_json_contact_validation() -> None:
    body, ctype = render(contact(), "json")
    assert validate(body, ctype) == []
    assert validate(body.replace(b'"panic"', b'"alien"', 1), ctype)
    assert validate(b"{", ctype)[0].startswith("not valid JSON")


def test_content_type_dispatch() -> None:
    cap_body, _ = render(contact(), "cap")
    eido_body, _ = render(contact(), "eido")
    assert validate(cap_body, "application/xml; charset=utf-8") == []
    assert validate(eido_body, "application/json") == []  # recognised by eidoVersion
    assert validate(cap_body, "text/plain")[0].startswith("unsupported content type")
    # A CAP body declared as PIDF is refused, not silently accepted.
    assert validate(cap_body, "application/pidf+xml")


def test_pidf_rejects_missing_location_but_others_render() -> None:
    c = no_location_contact()
    for fmt in ("json", "cap", "eido"):
        body, ctype = render(c, fmt)  # type: ignore[arg-type]
        assert validate(body, ctype) == []


def test_time_formats() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    dt = datetime(2026, 1, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=1)))
    assert cap_time(dt) == "2026-01-01T22:59:59-00:00"
    assert rfc3339(dt) == "2026-01-01T22:59:59.999Z"
    assert cap_time(datetime(2026, 1, 1)) == "2026-01-01T00:00:00-00:00"  # naive is taken as UTC
    assert rfc3339(datetime(2026, 6, 1, tzinfo=UTC)) == "2026-06-01T00:00:00.000Z"


def test_options_from_settings_uses_public_host() -> None:
    from bridge.app.config import Settings

    assert options_from_settings(Settings(public_url="https://sos.example.org/x")).domain == "sos.example.org"
    assert options_from_settings(Settings(public_url="http://127.0.0.1:8080")).domain == "sosbridge.invalid"
    body, _ = render(contact(), "cap", options_from_settings(Settings(public_url="https://sos.example.org")))
    assert b"<sender>sosbridge@sos.example.org</sender>" in body
