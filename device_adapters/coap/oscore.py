"""OSCORE (RFC 8613) for the CoAP adapter: one security context per device, found by its Sender ID.

A device registered for OSCORE has

* the credential `oscore` (stored unhashed: the bridge derives keys from it), a JSON object written from
  the **bridge's** point of view: `sender_id` (the bridge's Sender ID), `recipient_id` (the bridge's
  Recipient ID = the device's Sender ID = the `kid` in its requests), `master_secret`, optional
  `master_salt` and `id_context`, all hex; and
* the identifier `oscore_kid` = `recipient_id` (hex), so a request's `kid` leads to the device with one
  indexed store lookup instead of a scan.

`register_oscore_device()` writes both. The bridge materialises each context lazily, on the first
request carrying its `kid`, as an aiocoap FilesystemSecurityContext in `<data_dir>/oscore/<device_id>/`:
aiocoap keeps the sender sequence number and, on a clean shutdown, the replay window there, so both
survive a restart. After a crash the window is "unknown" and aiocoap recovers it with RFC 8613
Appendix B.1.2 (a 4.01 with an Echo option the client repeats in a fresh request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiocoap.error as coap_error
from aiocoap import oscore
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
from aiocoap.transports.oscore import OSCOREAddress
from pydantic import BaseModel, field_validator

if TYPE_CHECKING:
    from collections.abc import Callable

    from bridge.store.base import Store

log = logging.getLogger("sosbridge.coap.oscore")

CREDENTIAL = "oscore"
KID_SCHEME = "oscore_kid"
# AES-CCM-16-64-128 (aiocoap's and RFC 8613's default) has a 13-byte nonce, so IDs are at most 7 bytes.
MAX_ID_BYTES = 7


class OscoreMaterial(BaseModel):
    """The pre-shared OSCORE input parameters, from the bridge's side (hex strings)."""

    sender_id: str
    recipient_id: str
    master_secret: str
    master_salt: str = ""
    id_context: str | None = None

    @field_validator("sender_id", "recipient_id", "master_secret", "master_salt", "id_context")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.lower()
        bytes.fromhex(value)  # raises ValueError -> ValidationError
        return value

    @field_validator("sender_id", "recipient_id")
    @classmethod
    def _id_length(cls, value: str) -> str:
        if len(value) // 2 > MAX_ID_BYTES:
            raise ValueError(f"OSCORE IDs are at most {MAX_ID_BYTES} bytes with the default algorithm")
        return value

    def reversed(self) -> OscoreMaterial:
        """The same context from the device's side (sender and recipient swapped)."""
        return self.model_copy(update={"sender_id": self.recipient_id, "recipient_id": self.sender_id})

    def context_files(self) -> dict[str, str]:
        """secret.json for aiocoap's FilesystemSecurityContext (its `_hex` key convention)."""
        doc = {
            "sender-id_hex": self.sender_id,
            "recipient-id_hex": self.recipient_id,
            "secret_hex": self.master_secret,
            "salt_hex": self.master_salt,
        }
        if self.id_context is not None:
            doc["id-context_hex"] = self.id_context
        return doc


def write_context_dir(basedir: Path, material: OscoreMaterial) -> None:
    """Create or refresh a context directory. A changed key starts a fresh sequence/replay state (the old
    one belongs to the old key); an unchanged key keeps it, which is what makes replay protection durable."""
    basedir.mkdir(parents=True, exist_ok=True)
    secret = basedir / "secret.json"
    wanted = material.context_files()
    try:
        current = json.loads(secret.read_text())
    except (FileNotFoundError, ValueError):
        current = None
    if current == wanted:
        return
    (basedir / "sequence.json").unlink(missing_ok=True)
    tmp = basedir / ".secret.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(wanted, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, secret)


class DeviceSecurityContext(oscore.FilesystemSecurityContext):  # type: ignore[misc]
    """A filesystem-backed context that knows which device it authenticates."""

    def __init__(self, basedir: str, device_id: str, fingerprint: str) -> None:
        super().__init__(basedir)
        self.device_id = device_id
        self.fingerprint = fingerprint
        self.authenticated_claims = [f"device:{device_id}"]

    def close(self) -> None:
        # Persists the exact sequence number and replay window and releases the lock file.
        if self.lockfile is not None:
            self._destroy()


async def register_oscore_device(store: Store, device_id: str, material: OscoreMaterial) -> None:
    """Give an already registered device an OSCORE context (credential + `oscore_kid` identifier)."""
    device = await store.get_device(device_id)
    if device is None:
        raise KeyError(device_id)
    other = await store.find_device(KID_SCHEME, material.recipient_id)
    if other is not None and other.device_id != device_id:
        raise ValueError(f"recipient_id {material.recipient_id} is already used by another device")
    await store.set_credential(device_id, CREDENTIAL, material.model_dump_json(), hashed=False)
    device.identifiers[KID_SCHEME] = material.recipient_id
    await store.put_device(device)


def device_for(remote: Any) -> str | None:
    """The device an OSCORE-unprotected request came from, or None for a plain (unprotected) request."""
    if isinstance(remote, OSCOREAddress) and isinstance(remote.security_context, DeviceSecurityContext):
        return remote.security_context.device_id
    return None


class ContextUnavailable(Exception):
    """The context exists but cannot be used (e.g. another process holds its lock)."""


class OscoreContexts:
    """Loads, refreshes and closes the per-device contexts inside an aiocoap CredentialsMap."""

    def __init__(self, store: Store, basedir: Path) -> None:
        self.store = store
        self.basedir = basedir
        self.credentials = CredentialsMap()
        self._loaded: dict[str, DeviceSecurityContext] = {}
        self._by_kid: dict[bytes, str] = {}
        self._lock = asyncio.Lock()

    async def ensure(self, kid: bytes) -> str | None:
        """Make the context for `kid` available to the site wrapper; the device id, or None if unknown.

        The store is asked on every request, so a revoked credential or a removed device stops working at
        once: a context whose `kid` no longer resolves to it is unloaded before aiocoap could use it."""
        device_id, material = await self._lookup(kid)
        async with self._lock:
            holder = self._by_kid.get(kid)
            if holder is not None and holder != device_id:
                self.forget(holder)
            if device_id is None or material is None:
                return None
            fingerprint = material.model_dump_json()
            current = self._loaded.get(device_id)
            if current is not None and current.fingerprint == fingerprint:
                return device_id
            if current is not None:
                self.forget(device_id)  # rekeyed
            path = self.basedir / device_id
            try:
                ctx = await asyncio.to_thread(self._load, path, material, device_id, fingerprint)
            except Exception as exc:  # filelock.Timeout when another process holds this context
                log.error("oscore context unavailable", extra={"device_id": device_id, "error": str(exc)})
                raise ContextUnavailable(str(exc)) from None
            self._loaded[device_id] = ctx
            self._by_kid[kid] = device_id
            self.credentials[f":{device_id}"] = ctx
            log.info("oscore context loaded", extra={"device_id": device_id})
        return device_id

    async def _lookup(self, kid: bytes) -> tuple[str | None, OscoreMaterial | None]:
        device = await self.store.find_device(KID_SCHEME, kid.hex())
        if device is None:
            return None, None
        raw = await self.store.get_credential(device.device_id, CREDENTIAL)
        if raw is None:
            return None, None
        try:
            material = OscoreMaterial.model_validate_json(raw)
        except ValueError:
            log.warning("unusable oscore credential", extra={"device_id": device.device_id})
            return None, None
        if material.recipient_id != kid.hex():
            return None, None  # identifier and credential disagree: refuse rather than guess
        return device.device_id, material

    @staticmethod
    def _load(path: Path, material: OscoreMaterial, device_id: str, fingerprint: str) -> DeviceSecurityContext:
        write_context_dir(path, material)
        return DeviceSecurityContext(str(path), device_id, fingerprint)

    def forget(self, device_id: str) -> None:
        ctx = self._loaded.pop(device_id, None)
        self.credentials.pop(f":{device_id}", None)
        if ctx is not None:
            self._by_kid.pop(ctx.recipient_id, None)
            ctx.close()

    def close(self) -> None:
        for device_id in list(self._loaded):
            self.forget(device_id)


def remove_context_dir(basedir: Path, device_id: str) -> None:
    """For de-registration: a stale directory must never be reused with a re-issued identical key."""
    shutil.rmtree(basedir / device_id, ignore_errors=True)


class BridgeOscoreSite(OscoreSiteWrapper):  # type: ignore[misc]
    """aiocoap's OSCORE site wrapper, with contexts loaded from the store on demand and refusals counted.

    Unprotected requests go straight to the inner site, whose resources require the HMAC signature.
    """

    def __init__(self, inner: Any, contexts: OscoreContexts, refused: Callable[[str], None]) -> None:
        super().__init__(inner, contexts.credentials)
        self.contexts = contexts
        self.refused = refused

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
        try:
            outer = oscore.verify_start(request)
        except oscore.NotAProtectedMessage:
            await self._inner_site.render_to_pipe(pipe)
            return
        except oscore.ProtectionInvalid:
            self.refused("bad_auth")
            raise coap_error.BadOption("Failed to decode the OSCORE option") from None
        kid = outer.get(oscore.COSE_KID)
        device_id = None
        if isinstance(kid, bytes):
            try:
                device_id = await self.contexts.ensure(kid)
            except ContextUnavailable:
                raise coap_error.ServiceUnavailable("security context busy") from None
        if device_id is None:
            self.refused("bad_auth")  # aiocoap answers 4.01 "Security context not found"
        else:
            self._count_replay(device_id, outer)
        try:
            await super().render_to_pipe(pipe)
        except oscore.ReplayErrorWithEcho:
            raise  # replay-window recovery after a crash (RFC 8613 B.1.2), not a refusal
        except coap_error.RenderableError:
            if device_id is not None:
                self.refused("bad_auth")  # e.g. 4.00 "Decryption failed": the wrong key
            raise

    def _count_replay(self, device_id: str, outer: dict[Any, Any]) -> None:
        # aiocoap answers a replay itself (4.01 "Replay detected"); this only counts it.
        ctx = self.contexts._loaded.get(device_id)
        piv = outer.get(oscore.COSE_PIV)
        if ctx is None or not isinstance(piv, bytes):
            return
        window = ctx.recipient_replay_window
        if window.is_initialized() and not window.is_valid(int.from_bytes(piv, "big")):
            self.refused("replay")
