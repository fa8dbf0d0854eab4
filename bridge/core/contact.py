"""The versioned Contact envelope `sosbridge.contact/1` sent to the police contact platform.

A contact is a snapshot taken when it is queued, so a retried delivery carries byte-identical content
under the same idempotency key.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.core.model import (
    DECODE_WARNINGS,
    Alert,
    AlertKind,
    AlertState,
    ContactStatus,
    Device,
    DeviceAuth,
    Location,
    Person,
    PersonDetails,
    Severity,
    utcnow,
)

SCHEMA_ID = "sosbridge.contact/1"

MsgType = Literal["alert", "update", "cancel", "message"]


class ContactDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    profile: str | None = None
    transport: str
    auth: DeviceAuth | None = Field(
        default=None,
        description="How the transport authenticated the device that raised the alert: none (its own identifier "
        "only: watch, plain DC-09, serial), token, hmac, oscore, aes (DC-09 account key) or broker (MQTT broker "
        "login and ACL). None for alerts stored before this was recorded",
    )
    label: str | None = None


class ContactLinks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ack: str | None = Field(default=None, description="POST here to acknowledge (help is on the way)")
    resolve: str | None = Field(default=None, description="POST here to resolve")
    messages: str | None = Field(default=None, description="POST here to send the person a text message")


class ContactMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: str
    text: str = Field(description="As the person typed it (control characters removed), at most 1000 characters")
    sent_at: datetime
    transport: str


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, title="SOS Bridge contact")

    schema_: Literal["sosbridge.contact/1"] = Field(default="sosbridge.contact/1", alias="schema")
    contact_id: str = Field(description="<alert_id>:<seq>, also the Idempotency-Key")
    alert_id: str
    seq: int = Field(ge=1)
    msg_type: MsgType
    status: ContactStatus = Field(description="actual, or exercise/test: never a real call")
    kind: AlertKind
    severity: Severity
    silent: bool = Field(description="Do not call or sound anything at the caller's end")
    state: AlertState
    escalation_count: int = 0
    reason: str | None = None
    tenant_id: str
    occurred_at: datetime
    received_at: datetime
    created_at: datetime
    device: ContactDevice
    person: PersonDetails | None = None
    language: str | None = None
    communication_needs: list[str] = Field(default_factory=list)
    location: Location | None = None
    verified: bool = True
    references: list[str] = Field(default_factory=list, description="contact_ids this one updates")
    message: ContactMessage | None = Field(default=None, description="msg_type message: the person's text")
    messages: list[ContactMessage] = Field(
        default_factory=list,
        description="msg_type message, when the person wrote faster than the rate: every text of this batch, "
        "oldest first (`message` is the last of them). Empty when the contact carries one text",
    )
    decode_warnings: list[str] = Field(
        default_factory=list,
        description="Descriptive parts of the device's frame that did not parse and were left out (e.g. "
        "location, time, battery_pct): the alert was raised without them, so a missing location may be the "
        "device's fault, not the person's. Empty when the frame decoded completely",
    )
    attributes: dict[str, Any] = Field(default_factory=dict)
    links: ContactLinks = Field(default_factory=ContactLinks)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=False)

    @property
    def idempotency_key(self) -> str:
        return self.contact_id


def police_view(person: Person | None) -> PersonDetails | None:
    """The person without their emergency contacts: those are the person's, not the platform's."""
    if person is None:
        return None
    return PersonDetails.model_construct(**{k: getattr(person, k) for k in _PERSON_DETAILS})


_PERSON_DETAILS = tuple(PersonDetails.model_fields)  # read once: pydantic's class property is slow per call


def build_contact(
    alert: Alert,
    device: Device | None,
    msg_type: MsgType,
    seq: int,
    reason: str | None,
    public_url: str | None,
    created_at: datetime | None = None,
    message: ContactMessage | None = None,
    messages: list[ContactMessage] | None = None,
) -> Contact:
    person = device.person if device else None
    language = alert.language or (person.language if person else None)
    base = (public_url or "").rstrip("/")
    links = ContactLinks(
        ack=f"{base}/v1/platform/alerts/{alert.alert_id}/ack" if base else None,
        resolve=f"{base}/v1/platform/alerts/{alert.alert_id}/resolve" if base else None,
        messages=f"{base}/v1/platform/alerts/{alert.alert_id}/messages" if base else None,
    )
    return Contact(
        contact_id=f"{alert.alert_id}:{seq}",
        alert_id=alert.alert_id,
        seq=seq,
        msg_type=msg_type,
        status=alert.status,
        kind=alert.kind,
        severity=alert.severity,
        silent=alert.silent,
        state=alert.state,
        escalation_count=alert.escalation_count,
        reason=reason,
        tenant_id=alert.tenant_id,
        occurred_at=alert.occurred_at,
        received_at=alert.received_at,
        created_at=created_at or utcnow(),
        device=ContactDevice(
            id=alert.device_id,
            profile=device.profile_id if device else None,
            transport=alert.transport,
            auth=alert.auth,
            label=device.label if device else None,
        ),
        person=police_view(person),
        language=language,
        communication_needs=list(person.communication_needs) if person else [],
        location=alert.location,
        verified=alert.verified,
        # The first contact and the previous one: enough to chain (CAP <references>) without a contact
        # growing with every update of a long alert.
        references=[f"{alert.alert_id}:{i}" for i in sorted({1, seq - 1}) if 1 <= i < seq],
        decode_warnings=[str(w) for w in alert.attributes.get(DECODE_WARNINGS) or ()],
        attributes=alert.attributes,
        links=links,
        message=message,
        messages=list(messages or ()),
    )


def contact_json_schema() -> dict[str, Any]:
    schema = Contact.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sosbridge.example/schemas/sosbridge.contact-1.json"
    return schema


def contact_json_schema_text() -> str:
    return json.dumps(contact_json_schema(), indent=2, sort_keys=True)
