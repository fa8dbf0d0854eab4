"""The SIP MESSAGE sink (`sosbridge.sinks` entry point `sip`): one outbox row, one RFC 8876 MESSAGE.

At-least-once: every attempt is a new transaction (new Call-ID and branch) carrying the same
`Idempotency-Key` header and the same CAP document (its identifier is the contact id and nothing in it
reads the clock), so a PSAP can recognise a redelivery. Transport errors, timeouts and unreadable
answers are retries; the response table is in outcome.py. Docs: docs/platform/sip-message.md.
"""

from __future__ import annotations

import logging
import secrets
import ssl
from typing import Any

from bridge.core.contact import Contact
from bridge.delivery.formats.cap import render_cap_rfc8876
from bridge.delivery.formats.common import RenderOptions
from bridge.delivery.formats.pidf import NoLocation, render_pidf
from bridge.delivery.sinks.base import Delivered, Outcome, Retry
from bridge.delivery.sinks.signing import IDEMPOTENCY_HEADER
from bridge.delivery.sip.message import CAP_TYPE, PIDF_TYPE, MessageRequest, Part, build_message
from bridge.delivery.sip.outcome import classify
from bridge.delivery.sip.response import SipParseError, alertmsg_error
from bridge.delivery.sip.transport import SipTimeout, send_request
from bridge.delivery.sip.uri import check_target, next_hop

log = logging.getLogger("sosbridge.sip")


class SipSink:
    def __init__(
        self,
        target: str,
        *,
        name: str = "sip",
        from_uri: str | None = None,
        outbound_proxy: str | None = None,
        geolocation_routing: bool = True,
        ca_file: str | None = None,
        timeout_s: float = 32.0,
        options: RenderOptions | None = None,
    ) -> None:
        check_target(target)
        self.name = name
        self.target = target
        self.options = options or RenderOptions()
        self.from_uri = from_uri or f"sip:sosbridge@{self.options.domain}"
        self.hop = next_hop(target, outbound_proxy)
        self.geolocation_routing = geolocation_routing
        self.timeout_s = timeout_s
        self.tls = ssl.create_default_context(cafile=ca_file) if self.hop.tls else None
        self.alertmsg_errors = 0  # 2xx answers that still carried an AlertMsg-Error

    @classmethod
    def for_route(cls, route: Any, url: str, *, name: str, timeout_s: float, options: RenderOptions) -> SipSink:
        """The sink for `url` (a route's url or fallback_url) with the route's SIP settings."""
        return cls(
            url,
            name=name,
            from_uri=route.sip_from,
            outbound_proxy=route.sip_outbound_proxy,
            geolocation_routing=route.geolocation_routing,
            ca_file=route.sip_ca_file,
            timeout_s=timeout_s,
            options=options,
        )

    def parts(self, contact: Contact) -> tuple[Part, Part | None]:
        """The CAP and PIDF-LO parts; their Content-IDs derive from the contact, so a retry is identical."""
        host = self.from_uri.partition("@")[2].split(";")[0].split(":")[0] or self.options.domain
        local = contact.contact_id.replace(":", ".")  # RFC 2392 cids are msg-ids: no ':' on the left
        cap = Part(CAP_TYPE, f"cap-{local}@{host}",
                   render_cap_rfc8876(contact, self.from_uri, self.target, self.options))
        try:
            pidf: Part | None = Part(PIDF_TYPE, f"loc-{local}@{host}", render_pidf(contact, self.options))
        except NoLocation:
            pidf = None  # CAP alone: the PSAP still gets the alert, without a Geolocation header
        return cap, pidf

    async def deliver(self, item: Any) -> Outcome:
        try:
            cap, pidf = self.parts(Contact.model_validate_json(item.payload))
        except Exception as exc:  # a formatter bug must not lose the contact: keep it and alarm
            return Retry(f"render failed: {exc}"[:300])
        branch = "z9hG4bK" + secrets.token_hex(10)
        tag = secrets.token_hex(6)
        call_id = f"{secrets.token_hex(12)}@{self.options.domain}"
        boundary = "sosbridge-" + secrets.token_hex(8)

        def build(transport: str, host: str, port: int) -> bytes:
            return build_message(MessageRequest(
                request_uri=self.target, from_uri=self.from_uri, from_tag=tag, to_uri=self.target,
                call_id=call_id, branch=branch, via_transport=transport,
                via_host=f"[{host}]" if ":" in host else host, via_port=port, cap=cap, pidf=pidf,
                boundary=boundary, geolocation_routing=self.geolocation_routing,
                idempotency_header=IDEMPOTENCY_HEADER, idempotency_key=item.idempotency_key,
            ))

        size = len(cap.body) + (len(pidf.body) if pidf else 0) + 1024
        try:
            response = await send_request(self.hop, build, branch, size_hint=size, timeout_s=self.timeout_s,
                                          tls=self.tls)
        except SipTimeout as exc:
            return Retry(f"SIP timeout: {exc}")
        except SipParseError as exc:
            return Retry(f"unreadable SIP response: {exc}"[:300])
        except (OSError, ssl.SSLError) as exc:
            return Retry(f"{type(exc).__name__}: {exc}"[:300])
        outcome = classify(response)
        err = alertmsg_error(response)
        if isinstance(outcome, Delivered) and err is not None:
            self.alertmsg_errors += 1
            log.warning("PSAP accepted the MESSAGE but reported an AlertMsg-Error",
                        extra={"alert_id": item.alert_id, "seq": item.seq, "alertmsg_error": err.code,
                               "route": self.name})
        return outcome

    async def close(self) -> None:
        return None
