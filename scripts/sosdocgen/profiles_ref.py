"""One page per built-in device profile (docs/devices/<id>.md) and the list of them, from hardware/profiles.

Like zigbee2mqtt's device pages: identity and white labels, what each frame means (mappings, ignored
frames, location), how to bind the device to the bridge, and the cited samples that run as tests.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.devices.profiles import BUILTIN_PROFILE_DIR, DeviceProfile, ProfileRegistry, topic_patterns, topic_schemes

# How a device of each decoder finds its registration: (identifier scheme, example value, what it is).
BINDINGS: dict[str, tuple[str, str, str]] = {
    "zigbee2mqtt": ("z2m", "hall-button", "its zigbee2mqtt friendly name (or `<base>/<friendly name>`)"),
    "lorawan": ("deveui", "a84041000181c061", "its DevEUI, 16 hex digits in lower case"),
    "chirpstack": ("deveui", "a84041000181c061", "its DevEUI, 16 hex digits in lower case"),
    "ttn": ("deveui", "a84041000181c061", "its DevEUI, 16 hex digits in lower case"),
    "owntracks": ("owntracks", "jane/phone", "its OwnTracks `<user>/<device>`"),
    "hermes": ("hermes_site", "kitchen", "the satellite's Hermes `siteId`"),
    "gsm_sms": ("msisdn", "+447700900123", "the tracker's phone number (E.164)"),
    "contact_id": ("contact_id", "1234", "the alarm account number in the Contact ID lines"),
    "diy_frame": ("diy_unit", "0a1b2c3d", "the UNIT field of its frames (8 hex digits)"),
}
SERIAL_PROTOCOL = {"gsm_sms": "gsm", "nmea": "nmea", "contact_id": "contactid", "diy_frame": "diy"}
TRANSPORT_PAGE = {
    "mqtt": "../transports/mqtt.md",
    "http": "../transports/http.md",
    "coap": "../transports/coap.md",
    "serial": "../transports/serial.md",
}


def _attr(profile: DeviceProfile, name: str, default: Any = None) -> Any:
    return getattr(profile, name, default)


def _value(value: Any) -> str:
    return "`" + (json.dumps(value) if not isinstance(value, str) else value) + "`"


def condition_text(cond: Any) -> str:
    data = cond.model_dump(by_alias=True, exclude_none=True) if hasattr(cond, "model_dump") else dict(cond)
    field = f"`{data.get('field')}`"
    if "exists" in data:
        return f"{field} {'is present' if data['exists'] else 'is absent'}"
    if data.get("in") is not None:
        return f"{field} is one of " + ", ".join(_value(v) for v in data["in"])
    if "matches" in data:
        return f"{field} matches `{data['matches']}`"
    return f"{field} = {_value(data.get('equals'))}"


def mapping_text(mapping: Any) -> str:
    data = mapping.model_dump(exclude_none=True) if hasattr(mapping, "model_dump") else dict(mapping)
    action = data.get("action", "alert")
    if data.get("kind"):
        result = f"{action} **{data['kind']}**"
    elif data.get("kind_from"):
        result = f"{action}, kind from `{data['kind_from']}`"
    else:
        result = str(action)
    if data.get("silent"):
        result += " (silent)"
    if data.get("silent_from"):
        result += f" (silent from `{data['silent_from']}`)"
    if data.get("trigger") == "state":
        result += " — a level: once on its rising edge, a restore when it clears"
    return result


def _options_section(profile: DeviceProfile) -> list[str]:
    options = _attr(profile, "options") or {}
    if not options:
        return []
    lines = ["## Decoder options", ""]
    actions = options.get("actions")
    if isinstance(actions, dict):
        lines += ["| button action | becomes |", "| --- | --- |"]
        lines += [f"| `{k}` | {v} |" for k, v in actions.items()]
        lines.append("")
    hints = options.get("hints")
    if isinstance(hints, dict):
        models = len(hints.get("model") or {})
        lines += [f"`hints`: the profiles that fit {models} zigbee2mqtt models, by model, emergency action and SOS "
                  "state; an alert raised through this profile names them in `suggested_profiles`.", ""]
    rest = {k: v for k, v in options.items() if k not in ("actions", "hints")}
    if rest:
        lines += ["```yaml", *(f"{k}: {json.dumps(v)}" for k, v in rest.items()), "```", ""]
    return lines


def _location_section(profile: DeviceProfile) -> list[str]:
    spec = _attr(profile, "location")
    lines = ["## Location", ""]
    if spec is None:
        lines.append(
            "The frames carry no position: the bridge uses the device's last known fix, else its registered "
            "address (`--lat`, `--lon`, `--address`, `--postcode` when you register it)."
        )
        return [*lines, ""]
    data = spec.model_dump(exclude_none=True) if hasattr(spec, "model_dump") else dict(spec)
    lines.append(f"Latitude from `{data.get('lat')}`, longitude from `{data.get('lon')}`.")
    if data.get("accuracy"):
        scale = data.get("accuracy_scale", 1.0)
        factor = f" times {scale}" if scale != 1.0 else ""
        lines.append(f"Accuracy (95 % radius, metres) from `{data['accuracy']}`{factor}.")
    if data.get("default_accuracy_m") is not None:
        lines.append(f"Without an accuracy field the bridge assumes {data['default_accuracy_m']} m.")
    if data.get("fix_time"):
        lines.append(f"Fix time from `{data['fix_time']}`.")
    if data.get("source"):
        lines.append(f"Location source: `{data['source']}`.")
    valid = data.get("valid_if") or []
    if valid:
        lines.append("A fix is used only when " + " and ".join(condition_text(c) for c in spec.valid_if) + ".")
    if _attr(profile, "location_updates"):
        lines.append("Frames with a fix that map to no event are location updates.")
    return [*lines, ""]


def binding_section(profile: DeviceProfile) -> list[str]:
    pid, transport, decoder = profile.id, _attr(profile, "transport", ""), _attr(profile, "decoder", "json")
    lines = ["## Binding it to the bridge", ""]
    coords = "--lat 57.4778 --lon -4.2247"
    if decoder in BINDINGS:
        scheme, example, what = BINDINGS[decoder]
        lines += [
            f"Register the device with the profile and {what} as its `{scheme}` identifier:",
            "",
            "```bash",
            f"sosbridge devices add hall-button --profile {pid} --identifier {scheme}={example} {coords}",
            "```",
            "",
        ]
    elif decoder == "nmea":
        lines += [
            "Register the device, then name it on the serial port the receiver is plugged into:",
            "",
            "```bash",
            f"sosbridge devices add pendant-7 --profile {pid}",
            "export SOSBRIDGE_SERIAL_PORTS='nmea=/dev/ttyACM0?device=pendant-7'",
            "```",
            "",
        ]
    elif transport == "coap":
        lines += [
            "Register the device, then give it its CoAP credentials (an HMAC key, or an OSCORE context):",
            "",
            "```bash",
            f"sosbridge devices add pendant-7 --profile {pid}",
            "sosbridge devices coap-key pendant-7          # or: sosbridge devices oscore pendant-7 --recipient-id d1",
            "```",
            "",
        ]
    elif transport == "mqtt" and (bound := _topic_scheme(profile)) is not None:
        scheme, pattern = bound
        lines += [
            f"Register the device with the value of the `{{{scheme}}}` level of its topic `{pattern}` as its "
            f"`{scheme}` identifier; the bridge subscribes to that topic:",
            "",
            "```bash",
            f"sosbridge devices add button-3 --profile {pid} --identifier {scheme}=<{scheme}> {coords}",
            "```",
            "",
        ]
    elif transport == "mqtt":
        lines += [
            "Register the device; it publishes on its own topic `sosbridge/<tenant>/<device id>/alert`:",
            "",
            "```bash",
            f"sosbridge devices add button-3 --tenant default --profile {pid} {coords}",
            "```",
            "",
        ]
    else:
        lines += [
            "Register the device; `devices add` prints its bearer token once, which the device sends on",
            "`POST /v1/alerts`:",
            "",
            "```bash",
            f"sosbridge devices add watch-42 --profile {pid}",
            "```",
            "",
        ]
    match = _attr(profile, "match") or {}
    if match:
        lines.append("The bridge recognises its frames by: " + ", ".join(f"{k} `{v}`" for k, v in match.items()) + ".")
    if _attr(profile, "fallback"):
        lines.append("It is the fallback profile for registered devices that name none and whose frames it matches.")
    if decoder in SERIAL_PROTOCOL and decoder != "nmea":
        proto = SERIAL_PROTOCOL[decoder]
        lines.append(f"Its receiver is a serial port: `SOSBRIDGE_SERIAL_PORTS='{proto}=/dev/serial/by-id/…'`.")
    interval = _attr(profile, "check_in_interval_s")
    if interval:
        lines.append(f"Supervised: a check-in is expected every {interval} s.")
    page = TRANSPORT_PAGE.get(str(transport))
    if page:
        lines.append(f"Transport details: [{transport}]({page}).")
    return [*lines, ""]


def _topic_scheme(profile: DeviceProfile) -> tuple[str, str] | None:
    for pattern in topic_patterns(profile):
        if schemes := topic_schemes(pattern):
            return schemes[0], pattern
    return None


def catalogue_source(profile_id: str, origins: dict[str, Any]) -> str:
    """Where a built-in profile comes from: the ecosystem release it was generated from, else curated."""
    first = origins[profile_id].read_text(encoding="utf-8").split("\n", 1)[0]
    if first.startswith("# Generated by") and " from " in first:
        return first.split(" from ", 1)[1].split(" (", 1)[0].split(";", 1)[0]
    return "curated"


def _payload(sample: Any) -> tuple[str, str]:
    if getattr(sample, "payload_text", None) is not None:
        text = sample.payload_text
        try:
            return "json", json.dumps(json.loads(text), indent=2)
        except (ValueError, TypeError):
            return "text", text
    if getattr(sample, "payload_hex", None) is not None:
        return "text", f"hex: {sample.payload_hex}"
    if getattr(sample, "payload_b64", None) is not None:
        return "text", f"base64: {sample.payload_b64}"
    return "json", json.dumps(getattr(sample, "payload", None), indent=2, default=str)


def samples_section(profile: DeviceProfile) -> list[str]:
    samples = _attr(profile, "samples") or []
    if not samples:
        return []
    lines = [
        "## Samples",
        "",
        "Real or documented frames with their source; the test suite and `sosbridge profiles check` run each.",
        "",
    ]
    for sample in samples:
        lang, body = _payload(sample)
        expect = [e.model_dump(exclude_none=True) for e in getattr(sample, "expect", [])]
        if getattr(sample, "expect_error", False):
            outcome = "refused with a reason"
        elif not expect:
            outcome = "no event"
        else:
            outcome = "; ".join(", ".join(f"{k} `{v}`" for k, v in e.items()) for e in expect)
        lines += [f"### {sample.name}", "", f"Source: {sample.source}", ""]
        meta = getattr(sample, "meta", {}) or {}
        if meta:
            lines += ["Meta: " + ", ".join(f"{k} `{v}`" for k, v in meta.items()), ""]
        lines += [f"```{lang}", body, "```", "", f"Result: {outcome}.", ""]
    return lines


def profile_page(profile: DeviceProfile) -> str:
    lines = [f"# {profile.vendor} {profile.model}", ""]
    if _attr(profile, "description"):
        lines += [profile.description or "", ""]
    labels = _attr(profile, "white_labels") or []
    kinds = ", ".join(f"`{k.value if hasattr(k, 'value') else k}`" for k in _attr(profile, "kinds", []))
    lines += [
        "| | |",
        "| --- | --- |",
        f"| profile id | `{profile.id}` |",
        f"| vendor | {profile.vendor} |",
        f"| model | {profile.model} |",
        f"| white labels | {', '.join(labels) if labels else 'none'} |",
        f"| transport | {_attr(profile, 'transport')} |",
        f"| decoder | `{_attr(profile, 'decoder')}` |",
        f"| kinds it may raise | {kinds} |",
        f"| debounce | {_attr(profile, 'debounce_s', 0)} s |",
        f"| file | `hardware/profiles/{profile.id}.yaml` |",
        "",
    ]
    mappings = _attr(profile, "mappings") or []
    ignore = _attr(profile, "ignore") or []
    lines += ["## What its frames mean", ""]
    if mappings:
        lines += ["| when | the bridge raises |", "| --- | --- |"]
        for m in mappings:
            lines.append(f"| {' and '.join(condition_text(c) for c in m.when)} | {mapping_text(m)} |")
        lines.append("")
    else:
        lines += [f"The `{_attr(profile, 'decoder')}` decoder maps the frames (see the decoder options below).", ""]
    if ignore:
        lines += ["Ignored (not events):", ""]
        lines += [f"- {' and '.join(condition_text(c) for c in rule)}" for rule in ignore]
        lines.append("")
    lines += [
        "A frame from a registered device that none of these covers is not dropped silently: it is counted",
        f"(`sosbridge_frames_unmatched_total{{profile=\"{profile.id}\"}}`), logged and, on MQTT, answered on the",
        "device's error topic ([the ingress](../ingress.md)).",
        "",
    ]
    lines += _options_section(profile)
    lines += _location_section(profile)
    lines += binding_section(profile)
    lines += samples_section(profile)
    return "\n".join(lines).rstrip() + "\n"


def builtin_profiles() -> list[DeviceProfile]:
    """The built-ins only (installed plug-ins may add profiles of their own)."""
    loaded = ProfileRegistry.load([])
    return [p for pid, p in sorted(loaded.profiles.items()) if loaded.origins[pid].parent == BUILTIN_PROFILE_DIR]


def profile_pages() -> dict[str, str]:
    profiles = builtin_profiles()
    origins = ProfileRegistry.load([]).origins
    pages = {f"{p.id}.md": profile_page(p) for p in profiles}
    sources: dict[str, int] = {}
    for p in profiles:
        ecosystem = catalogue_source(p.id, origins).split(" ")[0]  # the release or commit is in the table
        sources[ecosystem] = sources.get(ecosystem, 0) + 1
    counts = ", ".join(f"{n} {'curated by hand' if src == 'curated' else 'generated from ' + src}"
                       for src, n in sorted(sources.items(), key=lambda kv: (kv[0] != "curated", kv[0])))
    lines = [
        "# Supported devices",
        "",
        f"**The catalogue has {len(profiles)} device profiles**: {counts}.",
        "",
        "Every built-in device profile (hardware/profiles/). Each page says what the device's frames mean, how to",
        "bind it and which cited samples it is tested with. To add a device, see [Device profiles](index.md); how",
        "the generated ones are made: [the catalogue](catalogue.md).",
        "",
        "| device | vendor | transport | kinds | profile id | source |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in profiles:
        kinds = ", ".join(str(k.value if hasattr(k, "value") else k) for k in _attr(p, "kinds", []))
        lines.append(f"| [{p.model}]({p.id}.md) | {p.vendor} | {_attr(p, 'transport')} | {kinds} | `{p.id}` | "
                     f"{catalogue_source(p.id, origins)} |")
    pages["list.md"] = "\n".join(lines) + "\n"
    return pages
