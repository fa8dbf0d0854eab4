"""Builds the Alexa interaction models in skills/alexa/models/<locale>.json.

The duress phrase is an ordinary sample utterance of DuressIntent, so changing it means rebuilding the
model and re-uploading it in the Alexa developer console / ASK CLI:

    python -m skills.alexa.model_builder --duress "en-GB=is the kettle on" --out skills/alexa/models

Without --duress, SOSBRIDGE_ALEXA_DURESS_PHRASE applies to every English locale.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from skills.alexa.config import DEFAULT_DURESS_PHRASE

INVOCATION = "s. o. s. bridge"

_EN_HELP = [
    "I need help",
    "help me",
    "help me please",
    "call the police",
    "get the police",
    "send help",
    "get help",
    "I am in danger",
    "I'm in danger",
    "emergency",
    "this is an emergency",
    "I have fallen",
    "I've fallen",
    "someone is hurting me",
]
_EN_CANCEL = [
    "I'm OK",
    "I'm okay",
    "I am OK",
    "I am fine",
    "I'm fine",
    "false alarm",
    "cancel my alert",
    "cancel the alert",
    "stop my alert",
    "I don't need help",
]
_EN_STATUS = [
    "is help coming",
    "is anyone coming",
    "what is happening with my alert",
    "what's the status of my alert",
    "did my alert go through",
    "has my alert been answered",
]

LANGUAGE_TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "help": _EN_HELP,
        "cancel": _EN_CANCEL,
        "status": _EN_STATUS,
        "duress": DEFAULT_DURESS_PHRASE,
        "confirm": "Do you want to cancel your alert?",
    },
    "de": {
        "help": [
            "ich brauche Hilfe",
            "hilf mir",
            "hilfe bitte",
            "ruf die Polizei",
            "hol die Polizei",
            "schick Hilfe",
            "ich bin in Gefahr",
            "Notfall",
            "das ist ein Notfall",
            "ich bin gestürzt",
            "jemand tut mir weh",
        ],
        "cancel": [
            "mir geht es gut",
            "mir geht's gut",
            "alles in Ordnung",
            "Fehlalarm",
            "brich meinen Alarm ab",
            "Alarm abbrechen",
            "ich brauche keine Hilfe",
        ],
        "status": [
            "kommt Hilfe",
            "kommt jemand",
            "was ist mit meinem Alarm",
            "ist mein Alarm angekommen",
            "wurde mein Alarm beantwortet",
        ],
        "duress": "ist der Wasserkocher an",
        "confirm": "Möchtest du deinen Alarm abbrechen?",
    },
}

LOCALES = ("en-GB", "en-US", "de-DE")


def _intent(name: str, samples: list[str]) -> dict[str, Any]:
    return {"name": name, "slots": [], "samples": samples}


def build_model(locale: str, duress_phrase: str | None = None) -> dict[str, Any]:
    text = LANGUAGE_TEXT[locale.split("-")[0]]
    duress = duress_phrase or text["duress"]
    intents = [
        _intent("HelpIntent", list(text["help"])),
        _intent("DuressIntent", [duress]),
        _intent("CancelAlertIntent", list(text["cancel"])),
        _intent("StatusIntent", list(text["status"])),
        _intent("AMAZON.HelpIntent", []),
        _intent("AMAZON.StopIntent", []),
        _intent("AMAZON.CancelIntent", []),
        _intent("AMAZON.NavigateHomeIntent", []),
        _intent("AMAZON.FallbackIntent", []),
    ]
    return {
        "interactionModel": {
            "languageModel": {"invocationName": INVOCATION, "intents": intents, "types": []},
            "dialog": {
                "intents": [
                    {
                        "name": "CancelAlertIntent",
                        "confirmationRequired": True,
                        "prompts": {"confirmation": "Confirm.Intent.CancelAlert"},
                        "slots": [],
                    }
                ],
                "delegationStrategy": "SKILL_RESPONSE",
            },
            "prompts": [
                {
                    "id": "Confirm.Intent.CancelAlert",
                    "variations": [{"type": "PlainText", "value": text["confirm"]}],
                }
            ],
        }
    }


def dump(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def _phrases(args: list[str]) -> dict[str, str]:
    phrases: dict[str, str] = {}
    env = os.environ.get("SOSBRIDGE_ALEXA_DURESS_PHRASE")
    if env:
        phrases.update({loc: env for loc in LOCALES if loc.startswith("en")})
    for item in args:
        locale, _, phrase = item.partition("=")
        phrases[locale] = phrase
    return phrases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "models"))
    parser.add_argument("--duress", action="append", default=[], metavar="LOCALE=PHRASE")
    args = parser.parse_args(argv)
    phrases = _phrases(args.duress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for locale in LOCALES:
        (out / f"{locale}.json").write_text(dump(build_model(locale, phrases.get(locale))), encoding="utf-8")


if __name__ == "__main__":
    main()
