"""Contacts for the format, routing and geo tests, built with the real build_contact() and geo enrichment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.core.contact import Contact, ContactMessage, build_contact
from bridge.core.geo import enrich_location
from bridge.core.model import Alert, AlertKind, AlertState, CivicAddress, Device, Location, Person, Severity
from tests.support.paths import FIXTURES

# Test vectors copied into the repo; sources and licences in tests/fixtures/standards/SOURCES.md.
STANDARDS = FIXTURES / "standards"

T0 = datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
ALERT_ID = "01JQ7ZK3M4N5P6Q7R8S9T0V1W2"

# Edinburgh Castle, Wikipedia infobox coordinates (55 56 55 N, 3 12 03 W).
EDINBURGH_CASTLE = (55.948611, -3.200833)
# Ben Nevis summit, Wikipedia infobox coordinates (56 47 49 N, 5 00 13 W).
BEN_NEVIS = (56.796891, -5.003675)

REGISTERED = Location(
    lat=55.9533,
    lon=-3.1883,
    source="registered_address",
    civic=CivicAddress(a1="Scotland", a2="City of Edinburgh", a3="Edinburgh", a6="High Street", hno="1",
                       loc="Flat 2/1", pc="EH1 1YZ"),
)


def gnss(lat: float, lon: float, accuracy_m: float | None = 12.5, **kw: Any) -> Location:
    loc = Location(lat=lat, lon=lon, accuracy_m=accuracy_m, source="gnss", fix_time=T0 - timedelta(seconds=4), **kw)
    enriched = enrich_location(loc)
    assert enriched is not None
    return enriched


def device(person: bool = True, status: str = "actual") -> Device:
    return Device(
        device_id="pendant-0042",
        tenant_id="care-north",
        profile_id="acme-sos-pendant",
        label="Acme SOS pendant",
        person=Person(
            name="Morag MacLeod",
            phone="+44 7700 900123",
            language="gd",
            communication_needs=["deaf: text only"],
            vulnerability_notes="Lives alone; key safe at the back door",
        )
        if person
        else None,
        registered_address=REGISTERED,
        status=status,  # type: ignore[arg-type]
    )


def alert(
    kind: AlertKind = AlertKind.panic,
    location: Location | None = None,
    state: AlertState = AlertState.received,
    status: str = "actual",
    silent: bool = True,
    severity: Severity | None = None,
    tenant: str = "care-north",
) -> Alert:
    return Alert(
        alert_id=ALERT_ID,
        tenant_id=tenant,
        device_id="pendant-0042",
        kind=kind,
        severity=severity or Severity.severe,
        silent=silent,
        status=status,  # type: ignore[arg-type]
        state=state,
        occurred_at=T0 - timedelta(seconds=2),
        received_at=T0,
        updated_at=T0,
        transport="http",
        location=location if location is not None else gnss(*EDINBURGH_CASTLE),
    )


def contact(
    msg_type: str = "alert",
    seq: int = 1,
    created_at: datetime | None = None,
    dev: Device | None = None,
    reason: str | None = None,
    message: ContactMessage | None = None,
    **alert_kw: Any,
) -> Contact:
    return build_contact(
        alert(**alert_kw),
        dev or device(),
        msg_type,  # type: ignore[arg-type]
        seq,
        reason,
        "https://bridge.example.org",
        created_at=created_at or (T0 + timedelta(milliseconds=250 + 1000 * (seq - 1))),
        message=message,
    )


def no_location_contact() -> Contact:
    c = contact()
    return c.model_copy(update={"location": None})
