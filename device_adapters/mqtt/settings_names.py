"""The MQTT adapter's own environment variables beyond bridge/app/config.py, registered under the
`sosbridge.settings` entry point group so that `serve` warns of a misspelt one (MqttOptions reads them)."""

NAMES = ("SOSBRIDGE_MQTT_Z2M_BASES",)
