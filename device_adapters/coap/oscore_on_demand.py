"""OSCORE loaded on the first request that needs it (docs/transports/coap.md, "OSCORE").

aiocoap's OSCORE support brings EDHOC (lakers), COSE and `cryptography`: about 9 MB resident, which a bridge
whose CoAP devices sign with HMAC never uses (issue 27's memory target). `OscoreOnDemand` stands where
`BridgeOscoreSite` (oscore.py) stood: a request without an OSCORE option (and not to `/.well-known/edhoc`) goes
straight to the site, as it did there; the first one with it loads oscore.py and builds the wrapper, which then
sees every later request. `device_for(remote)` is oscore.py's, answered without loading it while no OSCORE
request has come (no remote can be an OSCORE address before).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.store.base import Store
    from device_adapters.coap.oscore import BridgeOscoreSite, OscoreContexts

_OSCORE_MODULE = "device_adapters.coap.oscore"
EDHOC_PATH = (".well-known", "edhoc")


def device_for(remote: Any) -> str | None:
    """The device an OSCORE-protected request came from, or None (oscore.device_for)."""
    module = sys.modules.get(_OSCORE_MODULE)
    return None if module is None else module.device_for(remote)  # type: ignore[no-any-return]


class OscoreOnDemand:
    """The CoAP site with OSCORE in front of it, built on the first protected (or EDHOC) request."""

    def __init__(self, inner: Any, store: Store, basedir: Path, refused: Callable[[str], None]) -> None:
        self._inner = inner
        self._store = store
        self._basedir = basedir
        self._refused = refused
        self._site: BridgeOscoreSite | None = None
        self.contexts: OscoreContexts | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # link format, resource listing ...: the inner site's

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
        if self._site is None and request.opt.oscore is None and tuple(request.opt.uri_path) != EDHOC_PATH:
            await self._inner.render_to_pipe(pipe)
            return
        await self._oscore_site().render_to_pipe(pipe)

    def _oscore_site(self) -> BridgeOscoreSite:
        if self._site is None:
            from device_adapters.coap.oscore import BridgeOscoreSite, OscoreContexts

            self.contexts = OscoreContexts(self._store, self._basedir)
            self._site = BridgeOscoreSite(self._inner, self.contexts, self._refused)
        return self._site

    def close(self) -> None:
        """Writes each loaded context's sequence number and replay window (OscoreContexts.close)."""
        if self.contexts is not None:
            self.contexts.close()
