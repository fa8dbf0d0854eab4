"""Home Assistant Assist route: offline voice assistants raise, cancel and check alerts."""

from skills.assist.adapter import AssistAdapter

__all__ = ["AssistAdapter"]
