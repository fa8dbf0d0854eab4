"""RFC 7852 additional-data blocks (ProviderInfo, ServiceInfo, DeviceInfo, SubscriberInfo, Comment).

EIDO carries them as XML strings in `additionalDataByValue`. The RFC's XSDs are not published in a form
we could vendor (see schemas/README.md), so `check_block` applies the structural rules by hand: root
element and namespace, the mandatory DataProviderReference first, and the required children in order.
Registry values used here (TypeOfProvider, ServiceType, DeviceClassification, TypeOfDeviceID) are the
IANA "Emergency Call Additional Data" registry entries as recalled; confirm against the IANA registry.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from bridge.core.contact import Contact
from bridge.delivery.formats.common import RenderOptions, sub, xml_bytes

ECD = "urn:ietf:params:xml:ns:EmergencyCallData"
VCARD_NS = "urn:ietf:params:xml:ns:vcard-4.0"

# block name -> (namespace, required children in order after DataProviderReference)
BLOCKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ProviderInfo": (f"{ECD}:ProviderInfo", ("DataProviderString", "TypeOfProvider", "ContactURI")),
    "ServiceInfo": (f"{ECD}:ServiceInfo", ("ServiceType",)),
    "DeviceInfo": (f"{ECD}:DeviceInfo", ()),
    "SubscriberInfo": (f"{ECD}:SubscriberInfo", ("SubscriberData",)),
    "Comment": (f"{ECD}:Comment", ()),
}
for _prefix, _name in (("pi", "ProviderInfo"), ("svc", "ServiceInfo"), ("dev", "DeviceInfo"),
                      ("sub", "SubscriberInfo"), ("com", "Comment")):
    ET.register_namespace(_prefix, BLOCKS[_name][0])
ET.register_namespace("xcard", VCARD_NS)

_ORDER: dict[str, tuple[str, ...]] = {
    "ProviderInfo": (
        "DataProviderReference",
        "DataProviderString",
        "ProviderID",
        "ProviderIDSeries",
        "TypeOfProvider",
        "ContactURI",
        "Language",
        "DataProviderContact",
        "SubcontractorPrincipal",
        "SubcontractorPriority",
    ),
    "ServiceInfo": ("DataProviderReference", "ServiceEnvironment", "ServiceType", "ServiceMobility"),
    "DeviceInfo": (
        "DataProviderReference",
        "DeviceClassification",
        "DeviceMfgr",
        "DeviceModelNr",
        "UniqueDeviceID",
        "DeviceSpecificData",
        "DeviceSpecificType",
    ),
    "SubscriberInfo": ("DataProviderReference", "SubscriberData"),
    "Comment": ("DataProviderReference", "Comment"),
}

# Wearables and pendants move with the person; hubs, panels and speakers stay put.
_MOBILE_TRANSPORTS = frozenset({"http", "mqtt", "coap", "lorawan", "sms", "serial-gsm", "owntracks"})


def provider_reference(contact: Contact, options: RenderOptions) -> str:
    # Ties every block of one contact to its ProviderInfo (RFC 7852 DataProviderReference).
    return f"{contact.contact_id.replace(':', '.')}@{options.domain}"


def _block(name: str) -> ET.Element:
    ns = BLOCKS[name][0]
    return ET.Element(f"{{{ns}}}EmergencyCallData.{name}")


def _c(parent: ET.Element, name: str, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    return sub(parent, f"{{{BLOCKS[name][0]}}}{tag}", text, **attrib)


def provider_info(contact: Contact, options: RenderOptions) -> bytes:
    root = _block("ProviderInfo")
    _c(root, "ProviderInfo", "DataProviderReference", provider_reference(contact, options))
    _c(root, "ProviderInfo", "DataProviderString", options.agency_name)
    _c(root, "ProviderInfo", "TypeOfProvider", "Other")
    uri = contact.links.ack or f"https://{options.domain}/"
    _c(root, "ProviderInfo", "ContactURI", uri)
    _c(root, "ProviderInfo", "Language", options.default_language.split("-")[0])
    return xml_bytes(root)


def service_info(contact: Contact, options: RenderOptions) -> bytes:
    root = _block("ServiceInfo")
    _c(root, "ServiceInfo", "DataProviderReference", provider_reference(contact, options))
    # A device raised this alarm without a human caller on a voice line.
    _c(root, "ServiceInfo", "ServiceType", "sensor-unattended")
    mobile = contact.device.transport in _MOBILE_TRANSPORTS
    _c(root, "ServiceInfo", "ServiceMobility", "Mobile" if mobile else "Fixed")
    return xml_bytes(root)


def device_info(contact: Contact, options: RenderOptions) -> bytes:
    root = _block("DeviceInfo")
    _c(root, "DeviceInfo", "DataProviderReference", provider_reference(contact, options))
    mobile = contact.device.transport in _MOBILE_TRANSPORTS
    _c(root, "DeviceInfo", "DeviceClassification", "sensor-mobile" if mobile else "sensor-fixed")
    if contact.device.profile:
        _c(root, "DeviceInfo", "DeviceModelNr", contact.device.profile)
    # SN: the bridge's registry id is a serial-number-like identifier assigned by the operator.
    _c(root, "DeviceInfo", "UniqueDeviceID", contact.device.id, TypeOfDeviceID="SN")
    return xml_bytes(root)


def subscriber_info(contact: Contact, options: RenderOptions) -> bytes | None:
    person = contact.person
    if person is None or not (person.name or person.phone or contact.language):
        return None
    root = _block("SubscriberInfo")
    root.set("privacyRequested", "false")
    _c(root, "SubscriberInfo", "DataProviderReference", provider_reference(contact, options))
    data = _c(root, "SubscriberInfo", "SubscriberData")
    vcard = sub(sub(data, f"{{{VCARD_NS}}}vcards"), f"{{{VCARD_NS}}}vcard")
    sub(sub(vcard, f"{{{VCARD_NS}}}fn"), f"{{{VCARD_NS}}}text", person.name or "Unknown")
    if contact.language:
        sub(sub(vcard, f"{{{VCARD_NS}}}lang"), f"{{{VCARD_NS}}}language-tag", contact.language)
    if person.phone:
        sub(sub(vcard, f"{{{VCARD_NS}}}tel"), f"{{{VCARD_NS}}}uri", f"tel:{person.phone.replace(' ', '')}")
    return xml_bytes(root)


def comment(contact: Contact, options: RenderOptions, text: str) -> bytes:
    root = _block("Comment")
    _c(root, "Comment", "DataProviderReference", provider_reference(contact, options))
    _c(root, "Comment", "Comment", text, **{"{http://www.w3.org/XML/1998/namespace}lang": "en"})
    return xml_bytes(root)


def check_block(text: str) -> list[str]:
    """Structural RFC 7852 checks for one block given as an XML string."""
    try:
        root = ET.fromstring(text.encode("utf-8") if isinstance(text, str) else text)
    except ET.ParseError as exc:
        return [f"additional data is not well-formed XML: {exc}"]
    ns, _, local = root.tag[1:].partition("}")
    name = local.removeprefix("EmergencyCallData.")
    if name not in BLOCKS:
        return [f"unknown additional-data block {root.tag}"]
    want_ns, required = BLOCKS[name]
    if ns != want_ns:
        return [f"{local} is in namespace {ns!r}, expected {want_ns!r}"]
    errors: list[str] = []
    children = [c.tag.split("}")[-1] for c in root if c.tag.startswith(f"{{{want_ns}}}")]
    if not children or children[0] != "DataProviderReference":
        errors.append(f"{local}: DataProviderReference must come first")
    elif not (root[0].text or "").strip():
        errors.append(f"{local}: DataProviderReference is empty")
    for tag in required:
        if tag not in children:
            errors.append(f"{local}: missing required {tag}")
    order = _ORDER[name]
    ranks = [order.index(c) for c in children if c in order]
    if ranks != sorted(ranks):
        errors.append(f"{local}: elements out of order")
    unknown = [c for c in children if c not in order]
    if unknown:
        errors.append(f"{local}: unexpected elements {unknown}")
    return errors
