"""Platform bodies rendered once, when a contact is queued (not on every delivery attempt).

`QueuedBodies(sinks)` is built by the runtime and given to the ledger, which calls it on a change's
outbox rows just before their commit. A row whose route's sink offers `render_ahead(item)` (the webhook
sink in CAP, EIDO or PIDF-LO) gets its body and format set, and the store keeps them with the row; every
attempt then sends those bytes, so a retry is byte-identical and costs no rendering. A render that fails
here leaves the body unset: delivery renders it and reports the failure as before, so a formatter bug
never costs the commit. Docs: docs/platform/webhook.md ("The body").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from bridge.delivery.sinks.base import Sink
from bridge.store.base import OutboxItem

log = logging.getLogger("sosbridge.forwarder")


class QueuedBodies:
    def __init__(self, sinks: Mapping[str, Sink]) -> None:
        # route -> the sink's render_ahead, only for the sinks that have one (looked up once, not per row)
        self._render = {route: fn for route, sink in sinks.items()
                        if callable(fn := getattr(sink, "render_ahead", None))}

    def __call__(self, items: Sequence[OutboxItem]) -> None:
        for item in items:
            render = self._render.get(item.route)
            if render is None or item.body is not None:
                continue
            try:
                render(item)
            except Exception as exc:  # rendered (and reported) at delivery instead
                item.body = item.body_format = None
                log.debug("body not rendered when queued",
                          extra={"alert_id": item.alert_id, "seq": item.seq, "error": repr(exc)[:200]})
