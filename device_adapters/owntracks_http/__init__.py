"""OwnTracks in HTTP mode: `POST /v1/owntracks` with the same JSON the app publishes over MQTT. See adapter.py."""

from device_adapters.owntracks_http.adapter import OwnTracksHttpAdapter

__all__ = ["OwnTracksHttpAdapter"]
