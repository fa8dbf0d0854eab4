"""Pure conversions from Alexa location data to `bridge.core.model.Location` (NOTES.md §6).

`LocationSource` has no Alexa-specific values, so the coarse `source` is "network" for Alexa
Geolocation (a phone's or car's fused fix) and "fixed" for the Device Address (a civic address typed into
the Alexa app: neither verified nor real-time); the precise origin goes in the alert attributes under
`location_source` (alexa_geolocation | alexa_device_address | registered_address | none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.core.model import CivicAddress, Location
from skills.alexa.verify import parse_alexa_time

ADDRESS_PERMISSION = "read::alexa:device:all:address"
GEOLOCATION_PERMISSION = "alexa::devices:all:geolocation:read"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def location_from_geolocation(geo: Mapping[str, Any] | None) -> Location | None:
    """`context.Geolocation` → Location, or None when services are off or there are no coordinates."""
    if not geo:
        return None
    services = geo.get("locationServices") or {}
    if services.get("access") == "DISABLED":
        return None
    coord = geo.get("coordinate") or {}
    lat, lon = _num(coord.get("latitudeInDegrees")), _num(coord.get("longitudeInDegrees"))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    altitude = geo.get("altitude") or {}
    heading = geo.get("heading") or {}
    speed = geo.get("speed") or {}
    return Location(
        lat=lat,
        lon=lon,
        accuracy_m=_num(coord.get("accuracyInMeters")),
        altitude_m=_num(altitude.get("altitudeInMeters")),
        heading_deg=_num(heading.get("directionInDegrees")),
        speed_mps=_num(speed.get("speedInMetersPerSecond")),
        source="network",
        # Amazon's own documented example timestamp is not ISO-8601; an unparseable one is left out.
        fix_time=parse_alexa_time(geo.get("timestamp")),
    )


def location_from_address(address: Mapping[str, Any] | None) -> Location | None:
    """Device Address API `Address` (camelCase JSON) → a civic-only Location."""
    if not address:
        return None

    def field(name: str) -> str | None:
        value = address.get(name)
        return str(value).strip() or None if value is not None else None

    street = ", ".join(p for p in (field("addressLine1"), field("addressLine2")) if p) or None
    civic = CivicAddress(
        country=(field("countryCode") or "GB").upper(),
        a1=field("stateOrRegion"),
        a2=field("districtOrCounty"),
        a3=field("city"),
        a6=street,
        loc=field("addressLine3"),
        pc=field("postalCode"),
    )
    if not any((civic.a6, civic.a3, civic.pc)):
        return None
    return Location(source="fixed", civic=civic)


def granted_scopes(permissions: Mapping[str, Any] | None) -> set[str]:
    scopes = (permissions or {}).get("scopes") or {}
    return {name for name, scope in scopes.items() if (scope or {}).get("status") == "GRANTED"}
