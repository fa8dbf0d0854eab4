"""What every serial protocol handler shares: device and profile resolution, and one submit path."""

from __future__ import annotations

import logging
from enum import Enum
from typing import TYPE_CHECKING

from bridge.decoding import Decoded, DecodeError, Frame, get_decoder
from bridge.model import Device, Observation
from bridge.pipeline import Rejected, SubmitResult
from bridge.profiles import DeviceProfile, ProfileRegistry
from bridge.store.base import StoreError
from device_adapters.serial.config import PortConfig
from device_adapters.serial.link import Connection

if TYPE_CHECKING:
    from bridge.adapters import AdapterContext

log = logging.getLogger("sosbridge.serial")

TRANSPORT = "serial"


class Outcome(Enum):
    stored = "stored"  # the pipeline accepted it (created, escalated, duplicate, updated ...)
    refused = "refused"  # permanently refused: tell the device, do not retry
    failed = "failed"  # nothing stored: do NOT acknowledge, the device (or we) retry


class PortHandler:
    def __init__(self, port: PortConfig, ctx: AdapterContext, profiles: ProfileRegistry) -> None:
        self.port = port
        self.ctx = ctx
        self.profiles = profiles
        self.default_profile = profiles.get(port.default_profile)
        if self.default_profile is None:
            raise ValueError(f"serial port {port.path}: no profile {port.default_profile!r}")

    async def session(self, conn: Connection) -> None:
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------------------
    def refuse(self, code: str, **extra: object) -> None:
        """Count a frame that never reached the pipeline (bad checksum, unknown sender ...)."""
        self.ctx.metrics.rejected(TRANSPORT, code)
        log.info("serial frame refused", extra={"port": self.port.path, "reason": code, **extra})

    async def port_device(self) -> Device | None:
        if self.port.device_id:
            return await self.ctx.store.get_device(self.port.device_id)
        return await self.ctx.store.find_device("serial_port", self.port.path)

    def profile_for(self, device: Device | None) -> DeviceProfile:
        profile = self.profiles.get(device.profile_id) if device else None
        if profile is None or profile.decoder != self.default_profile.decoder:  # type: ignore[union-attr]
            return self.default_profile  # type: ignore[return-value]
        return profile

    def decode(self, frame: Frame, profile: DeviceProfile) -> list[Decoded]:
        return get_decoder(profile.decoder)(frame, profile)

    async def redecode_for(self, device: Device, frame: Frame, events: list[Decoded]) -> list[Decoded]:
        """The first decode used the port's default profile; the device's own profile has the last word."""
        profile = self.profile_for(device)
        if profile.id == self.default_profile.id:  # type: ignore[union-attr]
            return events
        return self.decode(frame, profile)

    async def submit(self, obs: Observation) -> tuple[Outcome, SubmitResult | None, str | None]:
        try:
            result = await self.ctx.pipeline.submit(obs)
        except Rejected as exc:
            return Outcome.refused, None, exc.reason
        except StoreError as exc:
            log.error(
                "alert not stored; device not acknowledged",
                extra={"device_id": obs.device_id, "port": self.port.path, "error": str(exc)[:200]},
            )
            return Outcome.failed, None, "not stored"
        return Outcome.stored, result, None

    async def submit_all(
        self, device: Device, events: list[Decoded], raw: str
    ) -> tuple[Outcome, list[SubmitResult], str | None]:
        results: list[SubmitResult] = []
        outcome, reason = Outcome.stored, None
        for ev in events:
            obs = ev.to_observation(device.device_id, TRANSPORT, raw=raw)
            out, result, why = await self.submit(obs)
            if result is not None:
                results.append(result)
            if out is Outcome.failed:
                return out, results, why
            if out is Outcome.refused:
                outcome, reason = out, why
        return outcome, results, reason


def is_checksum_error(exc: DecodeError) -> bool:
    return type(exc).__name__ == "ChecksumError"
