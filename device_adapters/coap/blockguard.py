"""The outermost CoAP layer: a Block1 upload is refused before its blocks are kept.

aiocoap assembles Block1 uploads (RFC 7959) before any resource, and before authentication, sees them,
with no size limit: 23 MB of blocks were answered 2.31 Continue and held in memory. Here a block that
would carry the body past `max_payload` (or a Size1 announcing that) is answered 4.13 with Size1 at
once, and at most `max_assemblies` uploads may be in progress at a time (5.03 with Max-Age beyond), so
memory held by unauthenticated uploads is bounded by max_payload x max_assemblies. One source address
(whatever its ports) may have at most `max_per_source` of them, so one host cannot hold every slot for
the 93 s an abandoned assembly lives (issue 23 item 7; refused as `busy_source`, 5.03).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aiocoap
from aiocoap import Code

# aiocoap forgets an incomplete assembly after MAX_TRANSMIT_WAIT (RFC 7252: 93 s); so do we.
ASSEMBLY_LIFETIME_S = 93.0


class BlockwiseGuard:
    def __init__(
        self,
        inner: Any,
        max_payload: int,
        max_assemblies: int,
        refused: Callable[[str], None],
        max_per_source: int = 8,
    ) -> None:
        self._inner = inner
        self.max_payload = max_payload
        self.max_assemblies = max_assemblies
        self.max_per_source = max_per_source
        self.refused = refused
        self._active: OrderedDict[Any, tuple[float, str]] = OrderedDict()  # block key -> started at, source

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # link format, resource listing ...: the inner site's

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
        block1 = request.opt.block1
        if block1 is not None:
            refusal = self._check(request, block1)
            if refusal is not None:
                pipe.add_response(refusal, is_last=True)
                return
        await self._inner.render_to_pipe(pipe)

    def _check(self, request: aiocoap.Message, block1: Any) -> aiocoap.Message | None:
        declared = request.opt.size1
        if block1.start + len(request.payload) > self.max_payload or (
            declared is not None and declared > self.max_payload
        ):
            self.refused("too_large")
            self._active.pop(self._key(request), None)
            response = aiocoap.Message(code=Code.REQUEST_ENTITY_TOO_LARGE,
                                       payload=f"body over {self.max_payload} bytes".encode())
            response.opt.size1 = self.max_payload
            return response
        key = self._key(request)
        now = time.monotonic()
        while self._active and next(iter(self._active.values()))[0] < now - ASSEMBLY_LIFETIME_S:
            self._active.popitem(last=False)
        if not block1.more:
            self._active.pop(key, None)
        elif block1.block_number == 0 and key not in self._active:
            if len(self._active) >= self.max_assemblies:
                self.refused("busy")
                return aiocoap.Message(code=Code.SERVICE_UNAVAILABLE, max_age=5, payload=b"too many uploads")
            host = self._host(request)
            if sum(1 for _, source in self._active.values() if source == host) >= self.max_per_source:
                self.refused("busy_source")
                return aiocoap.Message(code=Code.SERVICE_UNAVAILABLE, max_age=5,
                                       payload=b"too many uploads from this address")
            self._active[key] = (now, host)
        return None

    @staticmethod
    def _host(request: aiocoap.Message) -> str:
        """The source address without its port: what one host cannot multiply."""
        sockaddr = getattr(request.remote, "sockaddr", None)
        if isinstance(sockaddr, tuple) and sockaddr:
            return str(sockaddr[0])
        return str(getattr(request.remote, "hostinfo", request.remote)).rpartition(":")[0]

    @staticmethod
    def _key(request: aiocoap.Message) -> Any:
        return (getattr(request.remote, "blockwise_key", request.remote), tuple(request.opt.uri_path))
