"""Rhasspy / Snips Hermes intents on `hermes/intent/<intentName>`.

The profile lists which intent names mean "help" and which mean "cancel" (`options.help_intents`,
`options.cancel_intents`); every other intent belongs to someone else and is ignored. The name comes
from the payload, not the topic (Snips names contain `:`). `siteId` identifies the satellite, which is
bound to a registered device and its address: a voice trigger has no location of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.core.model import AlertKind
from bridge.devices.decoding import Decoded, DecodeError, Frame, UndeclaredKind, parse_json_object

if TYPE_CHECKING:
    from bridge.devices.profiles import DeviceProfile


def intent_name(doc: dict[str, Any]) -> str:
    intent = doc.get("intent")
    if not isinstance(intent, dict) or not isinstance(intent.get("intentName"), str):
        raise DecodeError("Hermes intent without intent.intentName")
    return str(intent["intentName"])


def confidence(doc: dict[str, Any]) -> float | None:
    intent = doc.get("intent") or {}
    # Snips < 1.1 called it `probability`.
    value = intent.get("confidenceScore", intent.get("probability"))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def site_id(doc: dict[str, Any]) -> str:
    site = doc.get("siteId")
    return site if isinstance(site, str) and site else "default"


def configured_intents(profile: DeviceProfile) -> tuple[set[str], set[str]]:
    opts = profile.options
    return {str(i) for i in opts.get("help_intents", [])}, {str(i) for i in opts.get("cancel_intents", [])}


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    doc = parse_json_object(frame.payload)
    name = intent_name(doc)
    helps, cancels = configured_intents(profile)
    if name not in helps and name not in cancels:
        return []
    score = confidence(doc)
    threshold = float(profile.options.get("min_confidence", 0.0))
    if score is not None and score < threshold:
        return []
    session = doc.get("sessionId") or doc.get("id") or None
    attributes: dict[str, Any] = {"intent": name, "site_id": site_id(doc)}
    if score is not None:
        attributes["confidence"] = score
    base = {
        "device_ref": site_id(doc),
        "message_id": f"hermes:{session}" if session else None,
        "attributes": attributes,
    }
    if name in cancels:
        return [Decoded(action="cancel", reason=f"cancelled by voice ({name})", **base)]
    kind = AlertKind(profile.options.get("kind", "sos"))
    if kind not in profile.kinds:
        raise UndeclaredKind(f"kind {kind.value!r} is not one this device may send")
    silent = name in {str(i) for i in profile.options.get("silent_intents", [])}
    return [Decoded(action="alert", kind=kind, silent=silent, reason=f"voice intent {name}", **base)]
