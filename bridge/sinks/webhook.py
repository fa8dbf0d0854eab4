"""HTTP webhook sink towards the contact platform (our JSON envelope, CAP or EIDO)."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import httpx

from bridge.contact import Contact
from bridge.formats import RenderOptions, render
from bridge.formats.pidf import NoLocation
from bridge.model import utcnow
from bridge.sinks.base import Delivered, Outcome, Permanent, Retry
from bridge.sinks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from bridge.store.base import OutboxItem


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def render_body(item: OutboxItem, fmt: str, options: RenderOptions | None = None) -> tuple[bytes, str]:
    if fmt == "json":
        return item.payload.encode(), "application/json"
    return render(Contact.model_validate_json(item.payload), fmt, options)  # type: ignore[arg-type]


def classify(status: int, retry_after: str | None) -> Outcome:
    """2xx delivered; 408/429/5xx retried (honouring Retry-After); any other 4xx is permanent."""
    if 200 <= status < 300:
        return Delivered(status)
    if status in (408, 429) or status >= 500:
        return Retry(f"HTTP {status}", parse_retry_after(retry_after))
    return Permanent(f"HTTP {status}")


class WebhookSink:
    def __init__(
        self,
        url: str,
        secret: str,
        fmt: str = "json",
        timeout_s: float = 10.0,
        name: str = "webhook",
        options: RenderOptions | None = None,
    ):
        self.name = name
        self.url = url
        self.secret = secret
        self.fmt = fmt
        self.options = options
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def deliver(self, item: OutboxItem) -> Outcome:
        try:
            body, content_type = render_body(item, self.fmt, self.options)
        except NoLocation:
            return Permanent(f"{self.fmt} needs a location and this contact has none")
        except Exception as exc:  # a formatter bug must not lose the contact: keep it and alarm
            return Retry(f"render failed: {exc}")
        headers = {
            "Content-Type": content_type,
            IDEMPOTENCY_HEADER: item.idempotency_key,
            SIGNATURE_HEADER: sign(body, self.secret, item.idempotency_key),  # t=<unix>,v1=<hmac>
            "X-SOSBridge-Alert-Id": item.alert_id,
            "X-SOSBridge-Msg-Type": item.msg_type,
        }
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Retry(f"{type(exc).__name__}: {exc}"[:300])
        return classify(response.status_code, response.headers.get("Retry-After"))

    async def close(self) -> None:
        await self._client.aclose()
