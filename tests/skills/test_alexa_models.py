"""Interaction models in skills/alexa/models: complete, consistent with the handlers, and rebuildable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from skills.alexa import handlers
from skills.alexa.model_builder import LOCALES, build_model, dump, main

MODELS = Path(handlers.__file__).parent / "models"
REQUIRED_BUILTINS = {"AMAZON.HelpIntent", "AMAZON.StopIntent", "AMAZON.CancelIntent", "AMAZON.NavigateHomeIntent"}
CUSTOM = {handlers.HELP_INTENT, handlers.DURESS_INTENT, handlers.CANCEL_ALERT_INTENT, handlers.STATUS_INTENT,
          *handlers.CHECKIN_INTENTS}
# Alexa sample utterances: letters, spaces, apostrophes and the periods of spelled acronyms; {slot} names.
UTTERANCE = re.compile(r"^(?:[^\W\d_]+|\{[a-z]+\})(?:[ '.](?:[^\W\d_]*|\{[a-z]+\}))*$")


def test_at_least_three_locales_including_en_gb() -> None:
    files = {p.stem for p in MODELS.glob("*.json")}
    assert "en-GB" in files and len(files) >= 3
    assert files == set(LOCALES)


@pytest.mark.parametrize("locale", LOCALES)
def test_model_is_complete_and_matches_the_builder(locale: str) -> None:
    text = (MODELS / f"{locale}.json").read_text(encoding="utf-8")
    assert text == dump(build_model(locale)), "run python -m skills.alexa.model_builder"
    model = json.loads(text)["interactionModel"]
    intents = {i["name"]: i for i in model["languageModel"]["intents"]}
    assert set(intents) >= CUSTOM | REQUIRED_BUILTINS | {"AMAZON.FallbackIntent"}
    seen: set[str] = set()
    for name in CUSTOM:
        samples = intents[name]["samples"]
        assert samples, name
        slots = {slot["name"] for slot in intents[name]["slots"]}
        for sample in samples:
            assert UTTERANCE.match(sample), sample
            assert set(re.findall(r"\{(\w+)\}", sample)) <= slots, sample
            assert sample.lower() not in seen, f"{sample!r} is in two intents"
            seen.add(sample.lower())
    dialog = {i["name"]: i for i in model["dialog"]["intents"]}
    assert dialog[handlers.CANCEL_ALERT_INTENT]["confirmationRequired"] is True
    prompt_id = dialog[handlers.CANCEL_ALERT_INTENT]["prompts"]["confirmation"]
    assert prompt_id in {p["id"] for p in model["prompts"]}
    # The check-in's start and stop are confirmed (the skill asks with Dialog.ConfirmIntent).
    for name in ("CheckInStartIntent", "CheckInStopIntent"):
        assert dialog[name]["confirmationRequired"] is True
        assert dialog[name]["prompts"]["confirmation"] in {p["id"] for p in model["prompts"]}
    assert {s["type"] for s in intents["CheckInStartIntent"]["slots"]} == {"AMAZON.DURATION"}


def test_duress_phrase_is_configurable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SOSBRIDGE_ALEXA_DURESS_PHRASE", "water the plants")
    main(["--out", str(tmp_path), "--duress", "de-DE=gieß die Blumen"])
    for locale, phrase in (("en-GB", "water the plants"), ("en-US", "water the plants"), ("de-DE", "gieß die Blumen")):
        intents = json.loads((tmp_path / f"{locale}.json").read_text())["interactionModel"]["languageModel"]["intents"]
        duress = next(i for i in intents if i["name"] == handlers.DURESS_INTENT)
        assert duress["samples"] == [phrase]
