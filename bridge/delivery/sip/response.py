"""SIP response parsing (RFC 3261 §7, §7.3, §18.3, §25), pure: status line, headers, body.

Header names are case-insensitive and compact forms (`l`, `i`, `v`, ...) are expanded; folded lines
(a line starting with space or tab) continue the previous header. A response read from a stream must
carry Content-Length (§18.3); over UDP a missing one means "to the end of the datagram". Leading CRLFs
(keep-alives, RFC 5626) are skipped. Anything else malformed raises SipParseError, never another error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD = 65536
_COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length", "c": "content-type",
    "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via",
}
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6]\d\d) ?([^\r\n]*)$")
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_ALERTMSG = re.compile(r'^\s*(\d{3})\s*(?:;\s*message\s*=\s*"((?:[^"\\]|\\.)*)")?\s*(?:;.*)?$', re.IGNORECASE)
_DELTA = re.compile(r"^\s*(\d{1,10})")


class SipParseError(ValueError):
    """Not a well-formed SIP response."""


@dataclass(frozen=True)
class SipResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # (lower-case full name, value) in order
    body: bytes = b""

    def all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self.headers if n == key]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    @property
    def final(self) -> bool:
        return self.status >= 200


@dataclass(frozen=True)
class AlertMsgError:
    code: int
    message: str | None


def split_head(head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    """Status and headers of a head (everything before the blank line, without it)."""
    if len(head) > MAX_HEAD:
        raise SipParseError("response head is too large")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("response head is not UTF-8") from exc
    lines = text.split("\r\n")
    m = _STATUS_LINE.match(lines[0])
    if m is None:
        raise SipParseError(f"bad status line {lines[0][:80]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipParseError("a continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN.match(name):
            raise SipParseError(f"bad header line {line[:80]!r}")
        key = name.lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return int(m[1]), m[2], headers


def content_length(headers: list[tuple[str, str]]) -> int | None:
    values = {v for n, v in headers if n == "content-length"}
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("conflicting Content-Length headers")
    value = values.pop()
    if not value.isdigit() or len(value) > 9:
        raise SipParseError(f"bad Content-Length {value[:20]!r}")
    return int(value)


def parse_datagram(data: bytes) -> SipResponse:
    """A whole response in one buffer (a UDP datagram, or a test vector)."""
    data = data.lstrip(b"\r\n")
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError("no blank line after the headers")
    status, reason, headers = split_head(head)
    length = content_length(headers)
    if length is None:
        length = len(rest)
    if length > len(rest):
        raise SipParseError("body shorter than Content-Length")
    return SipResponse(status, reason, tuple(headers), rest[:length])


def alertmsg_error(response: SipResponse) -> AlertMsgError | None:
    """RFC 8876 §5.1 `AlertMsg-Error: 3DIGIT *(;message="...")`; None when absent or unreadable."""
    value = response.get("alertmsg-error")
    if value is None:
        return None
    m = _ALERTMSG.match(value)
    if m is None:
        return None
    message = re.sub(r"\\(.)", r"\1", m[2]) if m[2] is not None else None
    return AlertMsgError(int(m[1]), message)


def retry_after_s(response: SipResponse) -> float | None:
    """RFC 3261 §20.33 `Retry-After: delta-seconds [comment] *(;param)`: the seconds, or None."""
    value = response.get("retry-after")
    m = _DELTA.match(value) if value else None
    return float(m[1]) if m else None


def accepted_types(response: SipResponse) -> list[str]:
    return [t.split(";")[0].strip() for v in response.all("accept") for t in v.split(",") if t.strip()]
