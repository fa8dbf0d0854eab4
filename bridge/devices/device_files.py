"""Device files for `sosbridge devices import` and `devices export`: JSON Lines or CSV.

JSONL carries a full `Device` document per line (plus an optional `token`); CSV carries the common
fields flat (person fields, a registered point and one-line address, identifiers as
`scheme=value;scheme=value`, communication needs separated by `;`). Exports omit runtime state
(last_seen, last_location) and never contain tokens: they are stored hashed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import ValidationError

from bridge.core.model import CivicAddress, Device, Location, Person

FileFormat = Literal["jsonl", "csv"]
CSV_COLUMNS = [
    "device_id",
    "tenant_id",
    "profile_id",
    "label",
    "status",
    "check_in_interval_s",
    "gateway_id",
    "name",
    "phone",
    "language",
    "communication_needs",
    "vulnerability_notes",
    "lat",
    "lon",
    "address",
    "postcode",
    "identifiers",
    "emergency_contacts",
    "sms_replies",
    "audible_on_silent",
    "token",
]
RUNTIME_FIELDS = {"last_seen", "last_location"}


class DeviceFileError(ValueError):
    """A row that cannot be imported; the message starts with `FILE:LINE:`."""


@dataclass
class DeviceRow:
    line: int
    device: Device
    token: str | None


def detect_format(path: Path, first_line: str = "") -> FileFormat:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


def _error(path: Path, line: int, message: str) -> DeviceFileError:
    return DeviceFileError(f"{path}:{line}: {message}")


def _why(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "row"
    return f"{where}: {err['msg']}"


def _opt(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def device_from_csv(row: dict[str, str | None]) -> tuple[Device, str | None]:
    unknown = sorted(k for k in row if k is not None and k not in CSV_COLUMNS)
    if unknown:
        raise ValueError(f"unknown column {unknown[0]!r} (columns: {', '.join(CSV_COLUMNS)})")
    get = lambda key: _opt(row.get(key))  # noqa: E731
    idents: dict[str, str] = {}
    for item in (get("identifiers") or "").split(";"):
        if item.strip():
            scheme, sep, value = item.strip().partition("=")
            if not sep:
                raise ValueError(f"identifiers: {item.strip()!r} is not scheme=value")
            idents[scheme.strip()] = value.strip()
    lat, lon, address, postcode = get("lat"), get("lon"), get("address"), get("postcode")
    registered = None
    if (lat and lon) or address or postcode:
        civic = CivicAddress(a6=address, pc=postcode) if (address or postcode) else None
        registered = Location(
            lat=float(lat) if lat and lon else None,
            lon=float(lon) if lat and lon else None,
            source="registered_address",
            accuracy_m=50 if lat and lon else None,
            civic=civic,
        )
    person_fields = {k: get(k) for k in ("name", "phone", "language", "vulnerability_notes")}
    needs = [n.strip() for n in (get("communication_needs") or "").split(";") if n.strip()]
    carers = _emergency_contacts(get("emergency_contacts"))
    person = (
        Person.model_validate({**person_fields, "communication_needs": needs, "emergency_contacts": carers})
        if any(person_fields.values()) or needs or carers
        else None
    )
    interval = get("check_in_interval_s")
    device = Device(
        sms_replies=_flag(get("sms_replies"), "sms_replies"),
        audible_on_silent=_flag(get("audible_on_silent"), "audible_on_silent"),
        device_id=get("device_id") or "",
        tenant_id=get("tenant_id") or "default",
        profile_id=get("profile_id"),
        label=get("label"),
        status=get("status") or "actual",  # type: ignore[arg-type]
        check_in_interval_s=int(interval) if interval else None,
        gateway_id=get("gateway_id"),
        person=person,
        registered_address=registered,
        identifiers=idents,
    )
    return device, get("token")


def _flag(text: str | None, column: str) -> bool:
    """A yes/no column: empty is no."""
    value = (text or "").strip().lower()
    if value in ("", "false", "no", "0"):
        return False
    if value in ("true", "yes", "1"):
        return True
    raise ValueError(f"{column}: {text!r} is not true or false")


def _emergency_contacts(text: str | None) -> list[Any]:
    """The CSV column holds the contacts as a JSON array of objects (docs/operations/emergency-contacts.md)."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"emergency_contacts: not JSON ({exc.msg})") from None
    if not isinstance(value, list):
        raise ValueError("emergency_contacts: a JSON array of objects")
    return value


def device_from_json(doc: Any) -> tuple[Device, str | None]:
    if not isinstance(doc, dict):
        raise ValueError("each line is a JSON object")
    doc = dict(doc)
    token = doc.pop("token", None)
    if token is not None and not isinstance(token, str):
        raise ValueError("token must be a string")
    return Device.model_validate(doc), token


def read_devices(path: Path) -> Iterator[DeviceRow]:
    """Rows of a device file, validated; raises DeviceFileError naming the file and line."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        head = fh.readline()
        fh.seek(0)
        if detect_format(path, head) == "jsonl":
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    device, token = device_from_json(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise _error(path, number, f"not JSON: {exc.msg}") from None
                except ValidationError as exc:
                    raise _error(path, number, _why(exc)) from None
                except ValueError as exc:
                    raise _error(path, number, str(exc)) from None
                yield DeviceRow(number, device, token)
            return
        reader = csv.DictReader(fh)
        for row in reader:
            number = reader.line_num
            try:
                device, token = device_from_csv(row)
            except ValidationError as exc:
                raise _error(path, number, _why(exc)) from None
            except ValueError as exc:
                raise _error(path, number, str(exc)) from None
            yield DeviceRow(number, device, token)


def device_to_csv(device: Device) -> dict[str, Any]:
    person = device.person or Person()
    reg = device.registered_address
    civic = reg.civic if reg else None
    return {
        "device_id": device.device_id,
        "tenant_id": device.tenant_id,
        "profile_id": device.profile_id or "",
        "label": device.label or "",
        "status": device.status,
        "check_in_interval_s": device.check_in_interval_s or "",
        "gateway_id": device.gateway_id or "",
        "name": person.name or "",
        "phone": person.phone or "",
        "language": person.language or "",
        "communication_needs": ";".join(person.communication_needs),
        "vulnerability_notes": person.vulnerability_notes or "",
        "lat": "" if reg is None or reg.lat is None else reg.lat,
        "lon": "" if reg is None or reg.lon is None else reg.lon,
        "address": (civic.a6 if civic else None) or "",
        "postcode": (civic.pc if civic else None) or "",
        "identifiers": ";".join(f"{k}={v}" for k, v in device.identifiers.items()),
        "emergency_contacts": json.dumps(
            [c.model_dump(mode="json", exclude_defaults=True) for c in person.emergency_contacts], ensure_ascii=False
        ) if person.emergency_contacts else "",
        "sms_replies": "true" if device.sms_replies else "",
        "audible_on_silent": "true" if device.audible_on_silent else "",
        "token": "",
    }


def write_devices(devices: Iterable[Device], out: TextIO, fmt: FileFormat) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for device in devices:
            writer.writerow(device_to_csv(device))
            count += 1
        return count
    for device in devices:
        out.write(device.model_dump_json(exclude=RUNTIME_FIELDS, exclude_none=True) + "\n")
        count += 1
    return count


def export_text(devices: Iterable[Device], fmt: FileFormat) -> str:
    buf = io.StringIO()
    write_devices(devices, buf, fmt)
    return buf.getvalue()
