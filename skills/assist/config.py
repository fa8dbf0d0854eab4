"""Home Assistant Assist route settings, from `SOSBRIDGE_ASSIST_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from skills.alexa.config import DEFAULT_DURESS_PHRASE


class AssistSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOSBRIDGE_ASSIST_", extra="ignore")

    enabled: bool = True
    path: str = "/v1/voice/assist"
    duress_phrase: str = Field(default=DEFAULT_DURESS_PHRASE, description="Spoken text that raises a silent alert")
    duress_reply: str | None = None
    ack_wait_s: float = Field(default=3.0, ge=0, le=10)
    default_language: str = "en-GB"
    max_body_bytes: int = 8 * 1024
