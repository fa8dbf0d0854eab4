"""HTTP wearable adapter: `POST /v1/alerts` and friends, authenticated by a device bearer token. See adapter.py."""

from device_adapters.http.adapter import HttpAdapter

__all__ = ["HttpAdapter"]
