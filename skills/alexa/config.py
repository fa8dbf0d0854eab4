"""Alexa skill settings, from `SOSBRIDGE_ALEXA_*` environment variables.

Kept apart from `bridge.app.config.Settings` so the skill (and its Lambda variant) can be configured on its
own; the adapter reads it when the runtime instantiates `AlexaAdapter()` with no arguments.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DURESS_PHRASE = "is the kettle on"


class AlexaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOSBRIDGE_ALEXA_", extra="ignore")

    enabled: bool | None = Field(
        default=None, description="Serve POST /alexa; defaults to on when an application id is configured"
    )
    application_ids: str = Field(
        default="", description="Comma-separated skill ids (amzn1.ask.skill.…) this bridge answers for"
    )
    path: str = "/alexa"

    # request verification
    verify_signature: bool = Field(default=True, description="Never turn off outside a lab")
    trust_roots: str | None = Field(
        default=None, description="PEM bundle of trusted roots; default: the certifi bundle"
    )
    cert_cache_dir: str | None = Field(
        default=None, description="Directory of certificate chains keyed by URL, so verification runs offline"
    )
    cert_fetch: bool = Field(default=True, description="Fetch a chain that is not in the cache")
    cert_fetch_timeout_s: float = 5.0
    timestamp_tolerance_s: float = Field(default=150.0, le=150.0)
    max_body_bytes: int = 128 * 1024

    # behaviour
    duress_phrase: str = Field(
        default=DEFAULT_DURESS_PHRASE,
        description="Innocent-sounding phrase that raises a silent duress alert (DuressIntent sample)",
    )
    duress_reply: str | None = Field(default=None, description="Innocuous reply to the duress phrase")
    default_locale: str = "en-GB"
    ack_wait_s: float = Field(
        default=3.0, ge=0, le=6.0, description="How long a help request waits for the platform's acknowledgement"
    )
    api_timeout_s: float = Field(default=2.0, description="Timeout for Device Address / progressive responses")
    api_ca_bundle: str | None = Field(
        default=None, description="CA bundle for the Alexa APIs (tests point this at their own CA)"
    )

    # Lambda relay: the Lambda variant forwards to a bridge over HTTP, signed with this shared secret
    relay_secret: str | None = None
    bridge_url: str | None = Field(default=None, description="Bridge base URL the Lambda forwards to")

    @property
    def application_id_set(self) -> frozenset[str]:
        return frozenset(a.strip() for a in self.application_ids.split(",") if a.strip())

    @property
    def is_enabled(self) -> bool:
        return self.enabled if self.enabled is not None else bool(self.application_id_set)
