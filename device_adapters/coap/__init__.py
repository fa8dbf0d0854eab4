"""CoAP adapter (aiocoap): POST /alert, GET + Observe /alert/<id>, /.well-known/core. See adapter.py."""

from device_adapters.coap.adapter import CoapAdapter

__all__ = ["CoapAdapter"]
