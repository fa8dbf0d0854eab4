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

# The check-in timer (docs/operations/checkin.md): {duration} is AMAZON.DURATION ("30 minutes" -> PT30M),
# {code} the duress code, AMAZON.FOUR_DIGIT_NUMBER. "I'm OK" stays the alert's cancel; "I'm safe" stops a timer.
_EN_CHECKIN = {
    "checkin_start": [
        "check on me in {duration}",
        "check in on me in {duration}",
        "start a check in for {duration}",
        "start my check in timer for {duration}",
        "set a check in for {duration}",
    ],
    "checkin_extend": [
        "give me {duration} more",
        "extend my check in by {duration}",
        "add {duration} to my check in",
    ],
    "checkin_stop": [
        "I'm safe",
        "I am safe",
        "I'm home",
        "I am home",
        "check me in",
        "cancel my check in",
        "stop my check in",
        "stop my check in code {code}",
        "I'm safe code {code}",
        "check me in code {code}",
    ],
    "checkin_status": [
        "how long is left on my check in",
        "how long until my check in",
        "check in status",
    ],
}

LANGUAGE_TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "help": _EN_HELP,
        "cancel": _EN_CANCEL,
        "status": _EN_STATUS,
        "duress": DEFAULT_DURESS_PHRASE,
        "confirm": "Do you want to cancel your alert?",
        **_EN_CHECKIN,
        "confirm_checkin_start": "Shall I check on you then?",
        "confirm_checkin_stop": "Do you want to stop your check-in?",
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
        "checkin_start": [
            "melde dich in {duration}",
            "melde dich in {duration} bei mir",
            "starte einen Check in für {duration}",
            "check in für {duration}",
        ],
        "checkin_extend": [
            "gib mir {duration} mehr",
            "verlängere meinen Check in um {duration}",
        ],
        "checkin_stop": [
            "ich bin in Sicherheit",
            "ich bin zu Hause",
            "Check in beenden",
            "beende meinen Check in",
            "Check in beenden Code {code}",
            "ich bin in Sicherheit Code {code}",
        ],
        "checkin_status": [
            "wie lange läuft mein Check in noch",
            "Check in Status",
        ],
        "confirm_checkin_start": "Soll ich mich dann melden?",
        "confirm_checkin_stop": "Möchtest du deinen Check-in beenden?",
    },
}

LOCALES = ("en-GB", "en-US", "de-DE")


# Intent names the handlers use (skills/alexa/handlers.py), with their slots.
CHECKIN_INTENTS = {
    "CheckInStartIntent": ("checkin_start", {"duration": "AMAZON.DURATION"}),
    "CheckInExtendIntent": ("checkin_extend", {"duration": "AMAZON.DURATION"}),
    "CheckInStopIntent": ("checkin_stop", {"code": "AMAZON.FOUR_DIGIT_NUMBER"}),
    "CheckInStatusIntent": ("checkin_status", {}),
}
CONFIRMED_CHECKIN = {"CheckInStartIntent": "confirm_checkin_start", "CheckInStopIntent": "confirm_checkin_stop"}


def _intent(name: str, samples: list[str], slots: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "slots": [{"name": k, "type": v} for k, v in (slots or {}).items()], "samples": samples}


def _confirmed(name: str, prompt: str, slots: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "confirmationRequired": True,
        "prompts": {"confirmation": prompt},
        "slots": [{"name": k, "type": v, "confirmationRequired": False, "elicitationRequired": False, "prompts": {}}
                  for k, v in slots.items()],
    }


def build_model(locale: str, duress_phrase: str | None = None) -> dict[str, Any]:
    text = LANGUAGE_TEXT[locale.split("-")[0]]
    duress = duress_phrase or text["duress"]
    intents = [
        _intent("HelpIntent", list(text["help"])),
        _intent("DuressIntent", [duress]),
        _intent("CancelAlertIntent", list(text["cancel"])),
        _intent("StatusIntent", list(text["status"])),
        *(_intent(name, list(text[key]), slots) for name, (key, slots) in CHECKIN_INTENTS.items()),
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
                    },
                    # The skill asks these itself (Dialog.ConfirmIntent, with the duration in the question);
                    # the prompts are what Alexa would say if the dialog were ever delegated.
                    *(_confirmed(name, f"Confirm.Intent.{name}", CHECKIN_INTENTS[name][1])
                      for name in CONFIRMED_CHECKIN),
                ],
                "delegationStrategy": "SKILL_RESPONSE",
            },
            "prompts": [
                {
                    "id": "Confirm.Intent.CancelAlert",
                    "variations": [{"type": "PlainText", "value": text["confirm"]}],
                },
                *({"id": f"Confirm.Intent.{name}", "variations": [{"type": "PlainText", "value": text[key]}]}
                  for name, key in CONFIRMED_CHECKIN.items()),
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
