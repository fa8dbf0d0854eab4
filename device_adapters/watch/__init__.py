"""4G SOS watches over TCP, speaking the "3G" text protocol (device_adapters/decoders/watch.py). See adapter.py."""

from device_adapters.watch.adapter import WatchAdapter

__all__ = ["WatchAdapter"]
