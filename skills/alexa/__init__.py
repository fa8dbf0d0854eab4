"""Alexa custom skill: help, silent duress help, cancel (confirmed), status; served at POST /alexa."""

from skills.alexa.adapter import AlexaAdapter

__all__ = ["AlexaAdapter"]
