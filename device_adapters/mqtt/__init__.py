"""MQTT transport: panic buttons, zigbee2mqtt, LoRaWAN network servers, OwnTracks and Hermes intents."""

from device_adapters.mqtt.adapter import MqttAdapter, MqttOptions

__all__ = ["MqttAdapter", "MqttOptions"]
