"""Each setting has one owner: the core's `Settings` names no transport, and no two settings classes claim
one variable. A transport's settings live in its own class, registered under `sosbridge.settings`
(docs/integrators/plugins.md#settings), so a field added to bridge/app/config.py under a transport's
prefix (`mqtt_...`) fails here instead of shadowing or splitting that transport's settings."""

from __future__ import annotations

from collections import Counter

from bridge.app.config import Settings, env_name
from bridge.app.sections import key_prefix, registered


def test_the_core_settings_name_no_registered_transport() -> None:
    prefixes = {name: key_prefix(cls) for name, cls in registered()}
    assert {"coap", "dc09", "mqtt", "serial", "watch"} <= set(prefixes)
    owned = [(field, name) for field in Settings.model_fields for name, prefix in prefixes.items()
             if field.startswith(prefix)]
    assert owned == [], f"move these fields into the transport's settings class: {owned}"


def test_no_two_classes_claim_one_variable() -> None:
    variables = Counter(env_name(field) for field in Settings.model_fields)
    for _name, cls in registered():
        variables.update(cls.env_name(field) for field in cls.model_fields)
    assert [v for v, n in variables.items() if n > 1] == []
