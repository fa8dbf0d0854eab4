"""SIA DC-09 (ANSI/SIA DC-09-2013 "Internet Protocol Event Reporting") messages from alarm panels,
telecare hubs and alarm receivers. Pure functions; the transport (device_adapters/dc09) does the I/O.

Wire: `<LF>CRC0LLL"id"seqRrcvr Lpref#acct[data]_timestamp<CR>` where CRC is four hex digits of
CRC-16/ARC (poly 0xA001 reflected, init 0) over everything from the first `"` to the byte before <CR>,
and 0LLL the length of that same part in hex. `id` is `SIA-DCS`, `ADM-CID` or `NULL`, with a leading `*`
when the part after `[` is AES-CBC encrypted (zero IV; key of 128/192/256 bits per account), hex coded;
the decrypted text is `pad|data]_timestamp` (the pad replaces `#acct`).

The timestamp `_HH:MM:SS,MM-DD-YYYY` is UTC. The receiver refuses (NAK, carrying its own time) a message
whose timestamp is more than 20 s ahead of or 40 s behind its clock: the window pysiaalarm applies
(`SIAAccount.allowed_timeband = (40, 20)`) for the standard's timestamp test (§5.5.1.8; the standard's
text itself was not available to check the numbers). The timestamp is mandatory for encrypted messages
(replay protection) and optional for plain ones.

Data: SIA DCS `#acct|Nri1/PA501` (`N`ew event, optional `ri` area / `id` user / `ti` time, two-letter
event code and zone/user number), or Contact ID in `ADM-CID`: `#acct|1123 01 001` (qualifier, event,
group/partition, zone) which is checked and split by the Contact ID decoder (contact_id.parse_line) so
the ADM-CID mappings are the same as a serial Contact ID receiver's. The profile maps codes to kinds.
Framing and test vectors after pysiaalarm (MIT) and its tests.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bridge.devices.decoding import ChecksumError, Decoded, DecodeError, Frame, KeyRefused, LengthError, StaleError
from bridge.devices.profiles import DeviceProfile, apply_profile
from device_adapters.decoders import contact_id

MAX_MESSAGE = 2048
WINDOW_BEHIND_S = 40.0  # a message may be this much older than the receiver's clock ...
WINDOW_AHEAD_S = 20.0  # ... or this much ahead of it
_HEADER = re.compile(r'^([0-9A-Fa-f]{4})0([0-9A-Fa-f]{3})(".*)$', re.S)
_BLOCK = re.compile(
    r'^"(?P<enc>\*)?(?P<id>SIA-DCS|ADM-CID|NULL)"(?P<seq>[0-9]{4})(?P<rcvr>R[0-9A-Fa-f]{1,6})?'
    r"(?P<pref>L[0-9A-Fa-f]{1,6})#?(?P<acct>[0-9A-Fa-f]{3,16})?\[(?P<rest>.*)$",
    re.S,
)
_TIMESTAMP = re.compile(r"_(\d{2}):(\d{2}):(\d{2}),(\d{2})-(\d{2})-(\d{4})$")
_SIA = re.compile(
    r"^N?(?:ri(?P<ri>[0-9A-Fa-f]{1,6})/?)?(?:id(?P<id>[0-9]{1,6})/?)?(?:ti(?P<ti>\d{2}:\d{2})/?)?"
    r"(?:ri(?P<ri2>[0-9A-Fa-f]{1,6})/?)?(?P<code>[A-Z]{2})(?P<num>[0-9A-Za-z]{0,8})(?P<text>[\^ -~\t\r\n]*)$"
)
_ADM = re.compile(r"^(?P<q>[136])(?P<event>[0-9]{3}) (?P<group>[0-9]{2}) (?P<zone>[0-9]{3})$")






@dataclass(frozen=True)
class Message:
    token: str  # SIA-DCS, ADM-CID or NULL
    encrypted: bool
    sequence: str
    receiver: str  # "R..." or ""
    prefix: str  # "L..."
    account: str
    data: str  # between [ and ], decrypted
    extra: str  # what follows ] before the timestamp ([x-data]...)
    timestamp: datetime | None
    body: str  # the part the CRC and length cover, as received


# -- arithmetic ------------------------------------------------------------------------------------------
def crc16(data: bytes) -> int:
    """CRC-16/ARC, as DC-09 and pysiaalarm compute it."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame_body(body: str) -> bytes:
    """`<LF>CRC0LLL` + body + `<CR>` for a message block (the transport's answers, the virtual panel)."""
    raw = body.encode("ascii")
    return b"\n" + f"{crc16(raw):04X}0{len(raw):03X}".encode() + raw + b"\r"


def parse_key(value: str) -> bytes:
    """An account key as panels are configured: 16/24/32 characters used as they are (pysiaalarm and
    most panel menus), or `hex:` + 32/48/64 hex digits (the standard's 128/192/256-bit key)."""
    if value.startswith("hex:"):
        try:
            key = bytes.fromhex(value[4:])
        except ValueError:
            raise DecodeError("the account key is not hex") from None
    else:
        key = value.encode("utf-8")
    if len(key) not in (16, 24, 32):
        raise DecodeError("an AES key has 128, 192 or 256 bits")
    return key


def aes(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    # Imported with the first encrypted frame: a bridge with no encrypted panels never loads OpenSSL's binding.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def encrypt_text(key: bytes, text: str) -> str:
    """`pad|text` padded to the block size with random printable characters (never `|[]`), hex."""
    fill = (-(len(text) + 1)) % 16 or 16
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    pad = "".join(secrets.choice(alphabet) for _ in range(fill))
    return aes(key, f"{pad}|{text}".encode("ascii"), decrypt=False).hex().upper()


def timestamp_text(when: datetime) -> str:
    return when.astimezone(UTC).strftime("_%H:%M:%S,%m-%d-%Y")


# -- parsing ---------------------------------------------------------------------------------------------
_STREAM_HEAD = re.compile(rb'[\n\x00]*[0-9A-Fa-f]{4}0([0-9A-Fa-f]{3})"')


def split_frames(buffer: bytes, *, final: bool = False) -> tuple[list[bytes], bytes]:
    """Complete messages (`<LF>CRC0LLL"id"...<CR>`) from a TCP stream; what is left waits for more. Pure.

    A message ends where its length field says, so a CR inside a field (an SIA `^text^`) never splits it.
    When the byte there is not a CR (a wrong length), or there is no header, the first CR ends it and
    check_frame refuses it (NAK: the panel repeats); a length reaching past what was sent waits for more
    until `final` (the sender paused, or a datagram) or until a CR followed by the next message's LF."""
    frames: list[bytes] = []
    while True:
        head = _STREAM_HEAD.match(buffer)
        if head is not None:
            end = head.end() - 1 + int(head[1], 16)  # the body starts at the `"`
            if len(buffer) <= end and not final and b"\r\n" not in buffer:
                return (frames, b"") if len(buffer) > MAX_MESSAGE else (frames, buffer)
            if len(buffer) > end and buffer[end : end + 1] == b"\r":
                frames.append(buffer[: end + 1])
                buffer = buffer[end + 1 :]
                continue
        cr = buffer.find(b"\r")
        if cr < 0:
            if len(buffer) > MAX_MESSAGE:
                return frames, b""
            return frames, buffer
        frames.append(buffer[: cr + 1])
        buffer = buffer[cr + 1 :]


def check_frame(raw: bytes) -> str:
    """The message block after the CRC and length checks (raises ChecksumError/LengthError). Pure."""
    if len(raw) > MAX_MESSAGE:
        raise LengthError(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE}")
    try:
        text = raw.decode("ascii").lstrip("\n\x00").rstrip("\r\n\x00")  # <LF> ... <CR>; spaces count
    except UnicodeDecodeError:
        raise DecodeError("DC-09 messages are ASCII") from None
    m = _HEADER.match(text)
    if not m:
        raise DecodeError("not a DC-09 message: expected CRC0LLL\"id\"...")
    crc, length, body = m.groups()
    if int(length, 16) != len(body):
        raise LengthError(f"declared length {int(length, 16)} but the message has {len(body)} characters")
    if int(crc, 16) != crc16(body.encode("ascii")):
        raise ChecksumError("CRC does not match")
    return body


def parse_block(body: str) -> Message:
    """Header fields of a checked message block; the data still encrypted when `*`. Pure."""
    m = _BLOCK.match(body)
    if not m:
        raise DecodeError("not a DC-09 message block")
    rest = m["rest"]
    account = m["acct"] or ""
    if not account and not m["enc"] and rest.startswith("#"):
        # Some communicators name the account only inside a plain data block: `L0001[#006969|...]`.
        account = rest[1:].partition("|")[0]
        if not re.fullmatch(r"[0-9A-Fa-f]{3,16}", account):
            raise DecodeError("bad account in the data block")
    return Message(
        token=m["id"], encrypted=bool(m["enc"]), sequence=m["seq"], receiver=m["rcvr"] or "",
        prefix=m["pref"], account=account.upper(), data=rest, extra="", timestamp=None, body=body,
    )  # fmt: skip


def _split_data(message: Message, text: str) -> Message:
    """`data]extra_timestamp` (plain) into its parts. A `]` inside an SIA `^text^` does not close the data."""
    close, in_text = -1, False
    for i, c in enumerate(text):
        if c == "^":
            in_text = not in_text
        elif c == "]" and not in_text:
            close = i
            break
    if close < 0:
        raise DecodeError("the data block has no closing ]")
    data, after = text[:close], text[close + 1 :]
    timestamp = None
    ts = _TIMESTAMP.search(after)
    if ts:
        hh, mi, ss, mo, dd, yyyy = (int(x) for x in ts.groups())
        try:
            timestamp = datetime(yyyy, mo, dd, hh, mi, ss, tzinfo=UTC)
        except ValueError:
            raise DecodeError("bad timestamp") from None
        after = after[: ts.start()]
    elif after.strip():
        if "_" in after:
            raise DecodeError("bad timestamp")
    return replace(message, data=data, extra=after, timestamp=timestamp)


def open_message(body: str, key: bytes | None) -> Message:
    """Parse, and decrypt with the account's key when the message is encrypted. Pure."""
    message = parse_block(body)
    if not message.encrypted:
        return _split_data(message, message.data)
    if key is None:
        raise KeyRefused(f"encrypted message for account {message.account!r}, which has no key")
    hex_data = message.data
    try:
        cipher = bytes.fromhex(hex_data)
    except ValueError:
        raise DecodeError("encrypted data is not hex") from None
    if not cipher or len(cipher) % 16:
        raise DecodeError("encrypted data is not whole AES blocks")
    try:
        clear = aes(key, cipher, decrypt=True).decode("ascii")
    except (UnicodeDecodeError, ValueError):
        raise KeyRefused("the message does not decrypt with this account's key") from None
    if not _TIMESTAMP.search(clear) or not clear.isprintable():
        raise KeyRefused("the message does not decrypt with this account's key")
    # pad|data]...: the pad ends at the first | (SIA-DCS) or, with no | (NULL), right before ].
    bar = clear.find("|")
    close = clear.find("]")
    start = bar + 1 if 0 <= bar < close else close
    message = _split_data(message, clear[start:] if start >= 0 else clear)
    if message.timestamp is None:
        raise StaleError("an encrypted message must carry a timestamp")
    return message


def check_window(message: Message, now: datetime) -> None:
    """Raises StaleError outside the window (-40 s / +20 s). Pure."""
    if message.timestamp is None:
        return
    delta = (message.timestamp - now).total_seconds()
    if delta < -WINDOW_BEHIND_S or delta > WINDOW_AHEAD_S:
        raise StaleError(f"timestamp {delta:+.0f} s from the receiver's clock, outside -40/+20 s")


# -- payloads --------------------------------------------------------------------------------------------
def parse_data(message: Message) -> dict[str, Any]:
    """The event as a flat document for the profile's mappings. Pure."""
    doc: dict[str, Any] = {"format": message.token, "account": message.account, "sequence": message.sequence}
    data = message.data
    if data.startswith("#"):
        acct, sep, data = data[1:].partition("|")
        if not sep:
            raise DecodeError("data block without |")
        if message.account and acct.upper() != message.account:
            raise DecodeError("the account inside the data block differs from the header's")
    elif data.startswith("|"):
        data = data[1:]
    if message.timestamp is not None:
        doc["sent_at"] = message.timestamp.isoformat()
    when = message.timestamp.isoformat() if message.timestamp else data
    doc["msg_id"] = f"{message.account}:{message.sequence}:{when}"
    if message.token == "NULL":
        doc["code"] = "NULL"
        return doc
    if message.token == "ADM-CID":
        m = _ADM.match(data.strip())
        if not m:
            raise DecodeError("ADM-CID data is not `Q EEE GG ZZZ`")
        # The Contact ID decoder checks and splits the event (its account digits exclude hex A, which
        # DC-09 accounts may contain, so a fixed account stands in; the header's account is kept).
        line = f"1234 18{m['q']}{m['event']}{m['group']}{m['zone']}".replace(" ", "")
        line += contact_id.checksum_digit(line)
        doc.update(contact_id.parse_line(line))
        doc["account"] = message.account
        return doc
    m = _SIA.match(data.strip())
    if not m:
        raise DecodeError("SIA DCS data is not `Nri../XXnnn`")
    doc.update(code=m["code"], zone=m["num"] or "", area=m["ri"] or m["ri2"] or "", user=m["id"] or "",
               text=(m["text"] or "").strip("^ \t\r\n"))
    return doc


def decode(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    """Payload: a message block the transport already checked (CRC, length), decrypted and dated."""
    try:
        body = frame.payload.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("DC-09 messages are ASCII") from None
    block = parse_block(body)
    if block.encrypted:
        raise DecodeError("the transport hands over decrypted messages only")
    message = _split_data(block, block.data)
    doc = parse_data(message)
    events = apply_profile(doc, profile, frame.meta)
    return [e.model_copy(update={"device_ref": e.device_ref or message.account}) for e in events]


def clear_body(message: Message) -> str:
    """The decrypted message as a plain block (what the transport hands to the ingress). Pure."""
    head = f'"{message.token}"{message.sequence}{message.receiver}{message.prefix}#{message.account}['
    ts = timestamp_text(message.timestamp) if message.timestamp else ""
    return f"{head}{message.data}]{message.extra}{ts}"


# -- answers ---------------------------------------------------------------------------------------------
def ack(message: Message, key: bytes | None, now: datetime) -> bytes:
    """ACK echoing sequence, receiver, prefix and account; encrypted (`*ACK`, padded, with the receiver's
    timestamp) when the message was. Pure but for the random pad."""
    head = f"{message.sequence}{message.receiver}{message.prefix}#{message.account}["
    if message.encrypted and key is not None:
        return frame_body(f'"*ACK"{head}{encrypt_text(key, "]" + timestamp_text(now))}')
    return frame_body(f'"ACK"{head}]')


def nak(now: datetime, message: Message | None = None) -> bytes:
    """NAK with the receiver's time, so the panel can correct its clock; never encrypted. Pure."""
    receiver = message.receiver if message and message.receiver else "R0"
    prefix = message.prefix if message else "L0"
    return frame_body(f'"NAK"0000{receiver}{prefix}A0[]{timestamp_text(now)}')


def duh(message: Message) -> bytes:
    """DUH: received correctly, but the receiver cannot process it (an unknown account, an event it does
    not handle). Pure."""
    return frame_body(f'"DUH"{message.sequence}{message.receiver}{message.prefix}#{message.account}[]')
