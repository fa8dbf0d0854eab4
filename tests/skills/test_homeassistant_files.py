"""The Home Assistant files shipped in skills/assist/homeassistant/ agree with the bridge: every language has
every intent, the spoken fallbacks are the bridge's own wording, the package calls only intents and kinds the
bridge knows, and the secrets it names are the ones secrets.yaml.example documents. (Home Assistant itself
runs them in tests/skills/test_homeassistant.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from bridge.core.model import AlertKind
from skills.alexa.config import DEFAULT_DURESS_PHRASE
from skills.alexa.speech import say
from skills.assist.adapter import AssistIntent
from tests.support.paths import ROOT

HA = ROOT / "skills" / "assist" / "homeassistant"
INTENTS = {"SosHelp", "SosNote", "SosCancel", "SosStatus"}
LANGS = {"en": "en-GB", "de": "de-DE"}


class _HaLoader(yaml.SafeLoader):
    """Home Assistant's YAML tags (!secret, !input, !include_dir_named) kept as tagged strings."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return f"{suffix} {loader.construct_scalar(node)}"


_HaLoader.add_multi_constructor("!", _tag)


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_HaLoader)  # a SafeLoader subclass: no arbitrary objects


@pytest.mark.parametrize("lang", sorted(LANGS))
def test_sentences_cover_every_intent_with_the_bridges_wording(lang: str) -> None:
    doc = load(HA / "custom_sentences" / lang / "sos_bridge.yaml")
    assert doc["language"] == lang
    assert set(doc["intents"]) == INTENTS
    locale = LANGS[lang]
    confirmed = set()
    for name, intent in doc["intents"].items():
        for block in intent["data"]:
            slots = block["slots"]
            assert slots["lang"] == locale and block["sentences"]
            if name == "SosNote":
                # Innocuous, and the same words the bridge uses for the duress reply.
                assert slots["noted"] == say("duress_reply", locale) and "unreachable" not in slots
            else:
                assert slots["unreachable"] == say("bridge_unreachable", locale)
            if name == "SosCancel":
                confirmed.add(slots["confirmed"])
    assert confirmed == {"yes", "no"}


def test_english_duress_sentence_is_the_bridges_default_phrase() -> None:
    doc = load(HA / "custom_sentences" / "en" / "sos_bridge.yaml")
    assert doc["intents"]["SosNote"]["data"][0]["sentences"] == [DEFAULT_DURESS_PHRASE]


def test_package_scripts_every_intent_and_calls_only_what_the_bridge_knows() -> None:
    package = load(HA / "packages" / "sos_bridge.yaml")
    assert set(package["intent_script"]) == INTENTS
    text = (HA / "packages" / "sos_bridge.yaml").read_text()
    called = set(re.findall(r"intent: (\w+Intent)", text))
    assert called and called <= set(get_args(AssistIntent))
    for name, script in package["intent_script"].items():
        steps = script["action"] if name != "SosNote" else script["action"][0]["repeat"]["sequence"]
        call = steps[0]
        # Every bridge call tolerates failure, so Assist never answers "An unexpected error occurred".
        assert call["action"] == "rest_command.sos_bridge_assist" and call["continue_on_error"] is True
    assert package["intent_script"]["SosNote"]["async_action"] is True
    assert "unreachable" not in package["intent_script"]["SosNote"]["speech"]["text"]


def test_secrets_the_package_names_are_documented() -> None:
    used = {s for p in (HA / "packages").glob("*.yaml") for s in re.findall(r"!secret (\w+)", p.read_text())}
    example = load(HA / "secrets.yaml.example")
    assert used == set(example)
    assert example["sos_bridge_token"].startswith("Bearer ")


@pytest.mark.parametrize("path", sorted((HA / "blueprints" / "automation" / "sos_bridge").glob("*.yaml")), ids=str)
def test_blueprints_send_kinds_the_bridge_knows(path: Path) -> None:
    doc = load(path)
    assert doc["blueprint"]["domain"] == "automation" and doc["blueprint"]["input"]
    text = path.read_text()
    assert "rest_command.sos_bridge_alert" in text and "continue_on_error: true" in text
    kinds = set(re.findall(r"kind: (\w+)", text)) | set(re.findall(r"'(duress|panic|sos|fall)'", text))
    kinds |= set(doc["blueprint"]["input"].get("kind", {}).get("selector", {}).get("select", {}).get("options", []))
    assert kinds <= {k.value for k in AlertKind}


def test_alarm_panel_blueprint_says_and_shows_nothing() -> None:
    text = (HA / "blueprints" / "automation" / "sos_bridge" / "alarm_panel_duress.yaml").read_text()
    assert "tts." not in text and "persistent_notification" not in text and "notify." not in text
