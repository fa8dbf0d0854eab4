"""AlexaAdapter: serves the skill at POST /alexa from the bridge's FastAPI app.

Every request is verified (skills.alexa.verify) before anything is parsed by ask-sdk; a failure is a 400,
counted in `sosbridge_alerts_rejected{transport="alexa"}`, and raises no alert. The skill itself runs in
a worker thread because ask-sdk handlers are synchronous; they reach the pipeline through LocalGateway.
ask-sdk, cryptography and httpx are imported when the skill's routes are built, i.e. only when the skill
is enabled: loading this entry point costs a bridge without Alexa nothing (docs/testing/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from bridge.app.config import Settings
from bridge.ingress.transport import AdapterContext, BaseAdapter
from skills.alexa.config import AlexaSettings

if TYPE_CHECKING:
    from skills.alexa.verify import AlexaRequestVerifier, ChainSource

log = logging.getLogger("sosbridge.alexa")


class AlexaAdapter(BaseAdapter):
    name = "alexa"
    transports = {"alexa": frozenset({"speech"}), "voice": frozenset({"speech"})}

    def __init__(
        self,
        config: AlexaSettings | None = None,
        *,
        chain_source: ChainSource | None = None,
        trust_roots_pem: bytes | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config or AlexaSettings()
        self._chain_source = chain_source
        self._trust_roots_pem = trust_roots_pem
        self._clock = clock

    def enabled(self, settings: Settings) -> bool:
        return self.config.is_enabled

    def verifier(self) -> AlexaRequestVerifier:
        from skills.alexa.certs import CachedChainSource, default_trust_roots_pem, http_fetcher
        from skills.alexa.verify import AlexaRequestVerifier, load_trust_roots

        cfg = self.config
        source = self._chain_source or CachedChainSource(
            cfg.cert_cache_dir, http_fetcher(cfg.cert_fetch_timeout_s) if cfg.cert_fetch else None
        )
        roots = load_trust_roots(self._trust_roots_pem or default_trust_roots_pem(cfg.trust_roots))
        verifier = AlexaRequestVerifier(
            chain_source=source,
            trust_roots=roots,
            application_ids=cfg.application_id_set,
            tolerance_s=cfg.timestamp_tolerance_s,
            verify_signature=cfg.verify_signature,
        )
        if self._clock is not None:
            verifier.clock = self._clock
        return verifier

    def routers(self, ctx: AdapterContext) -> list[APIRouter]:
        from ask_sdk_model import RequestEnvelope

        from device_adapters.checkin import timers
        from skills.alexa.amazon_api import AmazonApi, HttpxApiClient
        from skills.alexa.checkin import CheckinVoice
        from skills.alexa.gateway import LocalGateway
        from skills.alexa.handlers import SkillDeps, build_skill
        from skills.alexa.relay import relay_router
        from skills.alexa.service import VoiceService
        from skills.alexa.verify import VerificationFailed

        cfg = self.config
        verifier = self.verifier()
        service = VoiceService(ctx.store, ctx.ingress.observations, ctx.bus)
        # The check-in plug-in's running service, looked up per request (it starts after the routes exist).
        checkins = CheckinVoice(lambda: timers(ctx), ctx.store)
        gateway = LocalGateway(service, checkins=checkins)
        amazon = AmazonApi(HttpxApiClient(cfg.api_timeout_s, cfg.api_ca_bundle or True))
        skill = build_skill(SkillDeps(cfg, gateway, amazon))
        metrics = ctx.metrics
        router = APIRouter(tags=["alexa"])

        @router.post(cfg.path, summary="Alexa custom skill endpoint (signed requests only)")
        async def alexa(request: Request) -> Response:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > cfg.max_body_bytes:
                metrics.rejected("alexa", "too_large")
                return JSONResponse({"error": "request too large"}, status_code=413)
            body = await request.body()
            if len(body) > cfg.max_body_bytes:
                metrics.rejected("alexa", "too_large")
                return JSONResponse({"error": "request too large"}, status_code=413)
            try:
                # A chain fetch may block on the network the first time; keep it off the loop.
                await asyncio.to_thread(verifier.verify, dict(request.headers), body)
            except VerificationFailed as exc:
                metrics.rejected("alexa", exc.code)
                log.warning("alexa request rejected", extra={"reason": exc.code})
                return JSONResponse({"error": "request failed verification"}, status_code=400)
            if gateway.loop is None:
                gateway.loop = asyncio.get_running_loop()
            try:
                envelope = skill.serializer.deserialize(body.decode(), RequestEnvelope)
            except Exception:
                metrics.rejected("alexa", "bad_envelope")
                return JSONResponse({"error": "not an Alexa request envelope"}, status_code=400)
            response = await asyncio.to_thread(skill.invoke, envelope, None)
            return JSONResponse(skill.serializer.serialize(response))

        routers = [router]
        if cfg.relay_secret:
            routers.append(relay_router(cfg.path, cfg.relay_secret, service, checkins))
        return routers
