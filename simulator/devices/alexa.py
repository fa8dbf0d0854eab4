"""A virtual smart speaker: Alexa request envelopes signed by a throwaway test CA.

Verification in the bridge runs for real, offline: the root is ours (configured as the trust root), the
chain comes from the certificate cache, and the leaf is issued for echo-api.amazon.com. Tests use the
same CA for their negative cases (wrong SAN, expired window).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.infra.private_files import private_dir, private_file
from simulator.scenario import RunContext, Step, action

CERT_URL = "https://s3.amazonaws.com/echo.api/echo-api-cert-test.pem"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Leaf:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    chain_pem: bytes

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, cn: str = "SOS Bridge Test Root") -> None:
        now = datetime.now(UTC)
        self.key = _key()
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> TestCA:
        """A CA saved earlier (SmartSpeaker.save), to load a speaker with its trust material."""
        ca = cls.__new__(cls)
        key = serialization.load_pem_private_key(key_pem, None)
        assert isinstance(key, rsa.RSAPrivateKey)
        ca.key, ca.cert = key, x509.load_pem_x509_certificate(cert_pem)
        return ca

    @property
    def root_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        dns: str = "echo-api.amazon.com",
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        ip: str | None = None,
    ) -> Leaf:
        now = datetime.now(UTC)
        key = _key()
        names: list[x509.GeneralName] = [x509.DNSName(dns)]
        if ip:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dns))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(hours=1))
            .not_valid_after(not_after or now + timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.root_pem
        return Leaf(key, cert, chain)

    def key_pem(self, leaf: Leaf) -> bytes:
        return leaf.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


# -- the virtual speaker ---------------------------------------------------------------------------------
DEMO_APPLICATION_ID = "amzn1.ask.skill.00000000-0000-4000-8000-00000000demo"


@dataclass
class SmartSpeaker:
    """Signs and posts envelopes shaped like Alexa's to the bridge's POST /alexa."""

    ca: TestCA
    leaf: Leaf
    application_id: str = DEMO_APPLICATION_ID

    @classmethod
    def create(cls) -> SmartSpeaker:
        ca = TestCA()
        return cls(ca, ca.issue())

    def bridge_environment(self, workdir: Path) -> dict[str, str]:
        """SOSBRIDGE_ALEXA_* settings that make the bridge trust this speaker's CA, offline."""
        from skills.alexa.certs import CachedChainSource

        roots = workdir / "alexa-test-root.pem"
        roots.write_bytes(self.ca.root_pem)
        cache = workdir / "alexa-certs"
        CachedChainSource(cache, None).store(CERT_URL, self.leaf.chain_pem)
        return {
            "SOSBRIDGE_ALEXA_APPLICATION_IDS": self.application_id,
            "SOSBRIDGE_ALEXA_TRUST_ROOTS": str(roots),
            "SOSBRIDGE_ALEXA_CERT_CACHE_DIR": str(cache),
            "SOSBRIDGE_ALEXA_CERT_FETCH": "false",
            "SOSBRIDGE_ALEXA_ACK_WAIT_S": "1.5",
        }

    def save(self, directory: Path) -> dict[str, str]:
        """Keep this speaker in `directory` (0700: private keys) for `sim load --transport alexa`, with the
        trust material a bridge needs beside it; returns (and writes to `bridge.env`) the bridge's settings."""
        private_dir(directory)
        pem = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        for name, data in (
            ("speaker-key.pem", self.ca.key_pem(self.leaf)),
            ("speaker-chain.pem", self.leaf.chain_pem),
            ("ca-cert.pem", self.ca.root_pem),
            ("ca-key.pem", self.ca.key.private_bytes(serialization.Encoding.PEM, *pem)),
        ):
            private_file(directory / name).write_bytes(data)
        env = self.bridge_environment(directory)
        (directory / "bridge.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        return env

    @classmethod
    def load(cls, directory: Path) -> SmartSpeaker:
        """A speaker saved by `save()`; FileNotFoundError when the directory holds none."""
        ca = TestCA.from_pem((directory / "ca-cert.pem").read_bytes(), (directory / "ca-key.pem").read_bytes())
        chain = (directory / "speaker-chain.pem").read_bytes()
        key = serialization.load_pem_private_key((directory / "speaker-key.pem").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return cls(ca, Leaf(key, x509.load_pem_x509_certificate(chain), chain))

    def envelope(
        self, intent: str, device_id: str, locale: str = "en-GB", location: dict[str, float] | None = None
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        system: dict[str, Any] = {
            "application": {"applicationId": self.application_id},
            "user": {"userId": "amzn1.ask.account.simulated"},
            "device": {"deviceId": device_id, "supportedInterfaces": {"Geolocation": {}}},
        }
        context: dict[str, Any] = {"System": system}
        if location is not None:
            context["Geolocation"] = {
                "timestamp": stamp,
                "coordinate": {
                    "latitudeInDegrees": location["lat"],
                    "longitudeInDegrees": location["lon"],
                    "accuracyInMeters": location.get("accuracy_m", 20),
                },
            }
        return {
            "version": "1.0",
            "session": {
                "new": True,
                "sessionId": f"amzn1.echo-api.session.{uuid.uuid4()}",
                "application": {"applicationId": self.application_id},
                "user": {"userId": "amzn1.ask.account.simulated"},
            },
            "context": context,
            "request": {
                "type": "IntentRequest",
                "requestId": f"amzn1.echo-api.request.{uuid.uuid4()}",
                "timestamp": stamp,
                "locale": locale,
                "intent": {"name": intent, "confirmationStatus": "NONE", "slots": {}},
            },
        }

    def sign(self, envelope: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(envelope).encode()
        return body, {
            "Content-Type": "application/json",
            "SignatureCertChainUrl": CERT_URL,
            "Signature-256": self.leaf.sign(body),
        }

    async def say(self, bridge_url: str, envelope: dict[str, Any]) -> dict[str, Any]:
        body, headers = self.sign(envelope)
        async with httpx.AsyncClient(timeout=15) as client:
            r = await client.post(f"{bridge_url}/alexa", content=body, headers=headers)
        r.raise_for_status()
        return dict(r.json())


@action("alexa.say")
async def alexa_say(ctx: RunContext, step: Step) -> None:
    """Args: intent (HelpIntent, DuressIntent, CancelAlertIntent, StatusIntent), locale, location."""
    speaker: SmartSpeaker | None = ctx.scratch.get("alexa_speaker")
    if speaker is None:
        raise RuntimeError("this scenario needs the virtual smart speaker (run it with the embedded stack)")
    device = ctx.devices[step.device or ""]
    alexa_device = device.identifiers.get("alexa_device")
    if alexa_device is None:
        raise KeyError(f"{device.device_id} has no alexa_device identifier")
    envelope = speaker.envelope(
        step.args.get("intent", "HelpIntent"), alexa_device, step.args.get("locale", "en-GB"), step.args.get("location")
    )
    reply = await speaker.say(ctx.bridge_url, envelope)
    ctx.scratch.setdefault("alexa_replies", []).append(reply)
