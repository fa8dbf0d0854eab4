"""HTTP webhook sink towards the contact platform (our JSON envelope, CAP, EIDO or PIDF-LO).

A CAP/EIDO/PIDF-LO body is rendered once, when the contact is queued (`render_ahead`, called through
bridge/delivery/queued_bodies.py) and stored with the outbox row; every attempt sends those bytes, signed
afresh. A row without a stored body in this sink's format (JSON, an older row, a fallback in another
format) is rendered at delivery. Contract: docs/platform/webhook.md.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from bridge.core.contact import Contact
from bridge.core.model import utcnow
from bridge.delivery.formats import CONTENT_TYPES, JSON_CONTENT_TYPE, RenderOptions, render
from bridge.delivery.formats.pidf import NoLocation
from bridge.delivery.sinks.base import Delivered, Outcome, Permanent, Retry
from bridge.delivery.sinks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from bridge.store.base import OutboxItem

if TYPE_CHECKING:
    import aiohttp


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
    """The body to send and its content type: the one stored with the row when it is in `fmt`, else
    rendered now from the row's contact."""
    if item.body is not None and item.body_format == fmt:
        return item.body.encode("utf-8"), CONTENT_TYPES[fmt]
    if fmt == "json":
        return item.payload.encode(), JSON_CONTENT_TYPE
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
        self.timeout_s = timeout_s
        # aiohttp, not httpx: on the bench (16 concurrent keep-alive POSTs to a recording receiver) httpx
        # spent ~1.4 ms of CPU per request in its connection pool, aiohttp ~0.1 ms; delivery was the
        # bridge's largest CPU cost. The session is made on first use, inside the running loop; aiohttp is
        # imported then too: the main process of a bridge whose delivery process sends never loads it.
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_route(cls, route: Any, url: str, *, name: str, timeout_s: float,
                  options: RenderOptions | None = None) -> WebhookSink:
        """The `sosbridge.sinks` factory: a signed webhook to `url` in the route's format."""
        return cls(url, route.secret, route.format, timeout_s, name=name, options=options)

    def render_ahead(self, item: OutboxItem) -> None:
        """At queue time: the row's body in this sink's format, kept with the row. JSON needs none (the
        payload is the body). Raises what the renderer raises (pidf.NoLocation); the body stays unset."""
        if self.fmt == "json":
            return
        body, _ = render(Contact.model_validate_json(item.payload), self.fmt, self.options)  # type: ignore[arg-type]
        item.body, item.body_format = body.decode("utf-8"), self.fmt

    async def start(self) -> None:
        """Called by the runtime for the sinks its forwarder sends through (a delivery process imports
        aiohttp at its start): the first contact after a start does not wait the ~150 ms of the import."""
        import aiohttp  # noqa: F401

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
                auto_decompress=False,
            )
        return self._session

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
        import aiohttp  # loaded by the first _client(); here for the exception classes

        try:
            async with self._client().post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()  # drain, so the connection goes back to the pool
                return classify(response.status, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Retry(f"{type(exc).__name__}: {exc}"[:300])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
