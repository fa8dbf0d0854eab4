"""What the skill says, per language. Honest by construction (NOTES.md §8):

- never claims the police were called; "help is on the way" only once the platform acknowledged;
- if nothing could be stored, tells the caller to ring the emergency number themselves;
- the duress reply is innocuous and never mentions police, help or alerts.
"""

from __future__ import annotations

from bridge.core.model import AlertState

EMERGENCY_NUMBER = {"en-GB": "999", "en-IE": "112 or 999", "en-US": "911", "en-CA": "911", "en-AU": "000"}
DEFAULT_EMERGENCY_NUMBER = "112"

_EN: dict[str, str] = {
    "launch": "SOS Bridge. Say: I need help, to send an alert. Say: is help coming, to check on it.",
    "launch_reprompt": "Say: I need help, to send an alert.",
    "help": (
        "This skill sends an alert to a monitoring service, which can pass it to the police. "
        "It does not dial {number}. Say: I need help, to send an alert; is help coming, to check on it; "
        "or: I'm OK, to cancel it."
    ),
    "sending": "Sending your alert now.",
    "sent": (
        "Your alert has been sent. It has not been answered yet. If you can, call {number} yourself. "
        "Say: is help coming, to check again."
    ),
    "received": (
        "Your alert has been recorded and is being passed on. It has not been answered yet. "
        "If you can, call {number} yourself."
    ),
    "acknowledged": "Your alert has been answered. Help is on the way.",
    "latest_message": "The control room says: {text}",
    "resolved": "Your last alert has been closed.",
    "cancelled": "Your alert is cancelled.",
    "no_alert": "You have no open alert. Say: I need help, to send one.",
    "store_failed": "I could not send your alert. Please call {number} now.",
    "rejected": "I could not send your alert: {reason}. Please call {number} now.",
    "confirm_cancel": "Do you want to cancel your alert?",
    "confirm_cancel_assist": "Do you want to cancel your alert? Then say: yes, cancel my alert.",
    "bridge_unreachable": "I could not reach the emergency bridge. Call {number} now.",
    "cancel_denied": "OK. Your alert stays open.",
    "cancel_failed": "I could not cancel your alert. Please tell the operator when they contact you.",
    "nothing_to_cancel": "You have no open alert to cancel.",
    "permission_address": (
        "I could not read this device's address, so I sent the address you registered, if any. "
        "Please allow address access in the Alexa app."
    ),
    "goodbye": "Goodbye.",
    "fallback": "Sorry, I can't help with that. Say: I need help, to send an alert.",
    "error": "Sorry, something went wrong. If this is an emergency, call {number} now.",
    "duress_reply": "OK, noted.",
    "card_title": "SOS Bridge",
}

_DE: dict[str, str] = {
    "launch": "SOS Bridge. Sag: Ich brauche Hilfe, um einen Alarm zu senden. Sag: Kommt Hilfe, um nachzufragen.",
    "launch_reprompt": "Sag: Ich brauche Hilfe, um einen Alarm zu senden.",
    "help": (
        "Dieser Skill sendet einen Alarm an eine Leitstelle, die ihn an die Polizei weitergeben kann. "
        "Er wählt nicht die {number}. Sag: Ich brauche Hilfe, um einen Alarm zu senden; Kommt Hilfe, "
        "um nachzufragen; oder: Mir geht es gut, um ihn abzubrechen."
    ),
    "sending": "Ich sende deinen Alarm.",
    "sent": (
        "Dein Alarm wurde gesendet. Er wurde noch nicht beantwortet. Wenn du kannst, ruf selbst die "
        "{number} an. Sag: Kommt Hilfe, um erneut nachzufragen."
    ),
    "received": (
        "Dein Alarm wurde gespeichert und wird weitergeleitet. Er wurde noch nicht beantwortet. "
        "Wenn du kannst, ruf selbst die {number} an."
    ),
    "acknowledged": "Dein Alarm wurde angenommen. Hilfe ist unterwegs.",
    "latest_message": "Die Leitstelle sagt: {text}",
    "resolved": "Dein letzter Alarm wurde abgeschlossen.",
    "cancelled": "Dein Alarm ist abgebrochen.",
    "no_alert": "Du hast keinen offenen Alarm. Sag: Ich brauche Hilfe, um einen zu senden.",
    "store_failed": "Ich konnte deinen Alarm nicht senden. Bitte ruf jetzt die {number} an.",
    "rejected": "Ich konnte deinen Alarm nicht senden: {reason}. Bitte ruf jetzt die {number} an.",
    "confirm_cancel": "Möchtest du deinen Alarm abbrechen?",
    "confirm_cancel_assist": "Möchtest du deinen Alarm abbrechen? Dann sag: Ja, brich meinen Alarm ab.",
    "bridge_unreachable": "Ich konnte die Notruf-Brücke nicht erreichen. Ruf jetzt die {number} an.",
    "cancel_denied": "In Ordnung. Dein Alarm bleibt offen.",
    "cancel_failed": "Ich konnte deinen Alarm nicht abbrechen. Bitte sag es der Leitstelle, wenn sie sich meldet.",
    "nothing_to_cancel": "Du hast keinen offenen Alarm zum Abbrechen.",
    "permission_address": (
        "Ich konnte die Adresse dieses Geräts nicht lesen und habe, falls vorhanden, deine registrierte "
        "Adresse gesendet. Bitte erlaube den Adresszugriff in der Alexa App."
    ),
    "goodbye": "Tschüss.",
    "fallback": "Das kann ich leider nicht. Sag: Ich brauche Hilfe, um einen Alarm zu senden.",
    "error": "Entschuldigung, da ist etwas schiefgegangen. Im Notfall ruf jetzt die {number} an.",
    "duress_reply": "Okay, notiert.",
    "card_title": "SOS Bridge",
}

CATALOGUE: dict[str, dict[str, str]] = {"en": _EN, "de": _DE}

STATE_KEYS: dict[AlertState, str] = {
    AlertState.received: "received",
    AlertState.forwarded: "sent",
    AlertState.acknowledged: "acknowledged",
    AlertState.resolved: "resolved",
    AlertState.cancelled: "cancelled",
}


def emergency_number(locale: str) -> str:
    if locale in EMERGENCY_NUMBER:
        return EMERGENCY_NUMBER[locale]
    return DEFAULT_EMERGENCY_NUMBER


def say(key: str, locale: str, **values: str) -> str:
    table = CATALOGUE.get(locale.split("-")[0].lower(), _EN)
    text = table.get(key) or _EN[key]
    return text.format(number=emergency_number(locale), **values)


def state_speech(state: AlertState, locale: str) -> str:
    return say(STATE_KEYS[state], locale)


def status_speech(state: AlertState, locale: str, latest_message: str | None = None) -> str:
    """The state, then the platform's latest message read out (never for a silent alert: the caller
    answers those with the innocuous duress reply before getting here)."""
    speech = state_speech(state, locale)
    if latest_message:
        speech += " " + say("latest_message", locale, text=latest_message)
    return speech
