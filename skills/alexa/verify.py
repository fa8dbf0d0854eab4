"""Alexa request verification, written on `cryptography` (no oscrypto, no certvalidator).

Amazon's rules for a skill hosted as a web service (Amazon's "Host a Custom Skill as a Web Service" page):
- `SignatureCertChainUrl`: https, host s3.amazonaws.com, port 443 (or none), path under /echo.api/ after
  normalisation (case-sensitive);
- the PEM chain at that URL validates to a trusted root, the end certificate is within its validity window
  and its SAN names echo-api.amazon.com;
- `Signature-256` is RSA PKCS#1 v1.5 / SHA-256 over the exact raw body bytes;
- `request.timestamp` is within 150 s of now (3600 s for AlexaSkillEvent.*);
- the application id is one this bridge serves.

Trust roots, time and the chain source are inputs, so tests sign requests with a throwaway CA while the
production code path stays the same.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

CERT_HOST = "s3.amazonaws.com"
CERT_PATH_PREFIX = "/echo.api/"
ECHO_API_SAN = "echo-api.amazon.com"
MAX_TOLERANCE_S = 150.0
SKILL_EVENT_TOLERANCE_S = 3600.0

ChainSource = Callable[[str], bytes]


class VerificationFailed(Exception):
    """The request did not come from Alexa for this skill; answer 400 and raise nothing."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def header(headers: Mapping[str, str], name: str) -> str | None:
    lower = name.lower()
    for k, v in headers.items():
        if k.lower() == lower:
            return v
    return None


def check_cert_url(url: str) -> None:
    """Amazon's certificate URL rules, plus no query, fragment or user info (each would make the same
    chain a new URL: a new outbound fetch and a new cache entry for every forged request). Pure."""
    normalise_cert_url(url)


def normalise_cert_url(url: str) -> str:
    """The canonical form of a valid certificate URL (lower-case host, no port, normalised path): the one
    key the chain cache and fetcher use. Raises VerificationFailed for a URL that breaks the rules."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise VerificationFailed("cert_url", f"unparseable certificate URL: {exc}") from None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise VerificationFailed("cert_url", "certificate URL has a query or fragment")
    if parts.username is not None or parts.password is not None:
        raise VerificationFailed("cert_url", "certificate URL has user info")
    if parts.scheme.lower() != "https":
        raise VerificationFailed("cert_url", "certificate URL is not https")
    if (parts.hostname or "").lower() != CERT_HOST:
        raise VerificationFailed("cert_url", "certificate URL host is not s3.amazonaws.com")
    if port not in (None, 443):
        raise VerificationFailed("cert_url", "certificate URL port is not 443")
    path = posixpath.normpath(parts.path) if parts.path else ""
    if not path.startswith(CERT_PATH_PREFIX):
        raise VerificationFailed("cert_url", "certificate URL path is not under /echo.api/")
    return f"https://{CERT_HOST}{path}"


def load_chain(pem: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise VerificationFailed("cert_chain", f"certificate chain is not PEM: {exc}") from None
    if not certs:
        raise VerificationFailed("cert_chain", "certificate chain is empty")
    return certs


def load_trust_roots(pem: bytes) -> list[x509.Certificate]:
    """One certificate at a time: a bundle (e.g. certifi's) may hold an old root that newer cryptography
    warns about or refuses; that root is skipped instead of failing the whole store."""
    marker = b"-----BEGIN CERTIFICATE-----"
    roots: list[x509.Certificate] = []
    for block in pem.split(marker)[1:]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                roots.append(x509.load_pem_x509_certificate(marker + block))
            except ValueError:
                continue
    return roots


def check_chain(chain: list[x509.Certificate], roots: Iterable[x509.Certificate], now: datetime) -> None:
    """End certificate first; validity and SAN checked explicitly (clear reasons), then path building."""
    leaf = chain[0]
    if not (leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc):
        raise VerificationFailed("cert_expired", "signing certificate is outside its validity window")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if ECHO_API_SAN not in names:
        raise VerificationFailed("cert_san", "signing certificate does not name echo-api.amazon.com")
    store_roots = list(roots)
    if not store_roots:
        raise VerificationFailed("cert_untrusted", "no trust roots configured")
    verifier = PolicyBuilder().store(Store(store_roots)).time(now).build_server_verifier(DNSName(ECHO_API_SAN))
    try:
        verifier.verify(leaf, chain[1:])
    except VerificationError as exc:
        raise VerificationFailed("cert_untrusted", f"certificate chain does not validate: {exc}") from None


def check_signature(leaf: x509.Certificate, signature_b64: str, body: bytes) -> None:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationFailed("signature", "Signature-256 is not base64") from None
    key = leaf.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise VerificationFailed("signature", "signing certificate does not carry an RSA key")
    try:
        key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise VerificationFailed("signature", "body signature does not verify") from None


def parse_alexa_time(value: Any) -> datetime | None:
    """Alexa timestamps are ISO-8601 with a Z, but documented examples are not always valid; be lenient."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def check_timestamp(envelope: Mapping[str, Any], now: datetime, tolerance_s: float) -> None:
    request = envelope.get("request") or {}
    ts = parse_alexa_time(request.get("timestamp"))
    if ts is None:
        raise VerificationFailed("timestamp", "request has no valid timestamp")
    limit = min(tolerance_s, MAX_TOLERANCE_S)
    if str(request.get("type", "")).startswith("AlexaSkillEvent."):
        limit = SKILL_EVENT_TOLERANCE_S
    if abs((now - ts).total_seconds()) > limit:
        raise VerificationFailed("timestamp", "request timestamp is too far from now")


def application_id(envelope: Mapping[str, Any]) -> str | None:
    """context.System.application, else session.application (a SessionEndedRequest may have no context)."""
    system = ((envelope.get("context") or {}).get("System")) or {}
    app = (system.get("application") or {}).get("applicationId")
    if app:
        return str(app)
    session_app = ((envelope.get("session") or {}).get("application") or {}).get("applicationId")
    return str(session_app) if session_app else None


def check_application(envelope: Mapping[str, Any], allowed: frozenset[str]) -> None:
    app = application_id(envelope)
    if not allowed:
        raise VerificationFailed("application_id", "no skill application id is configured")
    if app not in allowed:
        raise VerificationFailed("application_id", "request is for another skill")


@dataclass
class AlexaRequestVerifier:
    """Runs every check in order; returns the parsed envelope of a genuine request."""

    chain_source: ChainSource
    trust_roots: list[x509.Certificate]
    application_ids: frozenset[str]
    tolerance_s: float = MAX_TOLERANCE_S
    verify_signature: bool = True
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def verify(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        now = self.clock()
        if self.verify_signature:
            url = header(headers, "SignatureCertChainUrl")
            signature = header(headers, "Signature-256")
            if not url or not signature:
                raise VerificationFailed("headers", "SignatureCertChainUrl and Signature-256 are required")
            url = normalise_cert_url(url)
            try:
                pem = self.chain_source(url)
            except VerificationFailed:
                raise
            except Exception as exc:
                raise VerificationFailed("cert_fetch", f"certificate chain unavailable: {exc}") from None
            chain = load_chain(pem)
            check_chain(chain, self.trust_roots, now)
            # The signature covers the exact bytes received: verify before any parsing.
            check_signature(chain[0], signature, body)
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise VerificationFailed("json", "body is not JSON") from None
        if not isinstance(envelope, dict):
            raise VerificationFailed("json", "body is not a JSON object")
        check_timestamp(envelope, now, self.tolerance_s)
        check_application(envelope, self.application_ids)
        return envelope
