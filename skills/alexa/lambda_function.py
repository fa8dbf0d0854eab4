"""AWS Lambda entry point: `skills.alexa.lambda_function.lambda_handler`.

The Lambda runs the same handlers as the web-service skill, built into a SkillBuilder and exposed with
`SkillBuilder.lambda_handler()`. It holds no store: it forwards to a bridge over HTTP (the relay routes,
signed with SOSBRIDGE_ALEXA_RELAY_SECRET) at SOSBRIDGE_ALEXA_BRIDGE_URL. Alexa's Lambda trigger and
`sb.skill_id` check the application id; Amazon signs nothing for Lambda, so no certificate checks here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from skills.alexa.amazon_api import AmazonApi, HttpxApiClient
from skills.alexa.config import AlexaSettings
from skills.alexa.handlers import SkillDeps, skill_builder
from skills.alexa.relay import HttpGateway

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def build_lambda_handler(settings: AlexaSettings | None = None) -> Handler:
    cfg = settings or AlexaSettings()
    if not cfg.bridge_url or not cfg.relay_secret:
        raise RuntimeError("set SOSBRIDGE_ALEXA_BRIDGE_URL and SOSBRIDGE_ALEXA_RELAY_SECRET for the Lambda skill")
    apps = sorted(cfg.application_id_set)
    if len(apps) != 1:
        raise RuntimeError("the Lambda skill needs exactly one SOSBRIDGE_ALEXA_APPLICATION_IDS value")
    gateway = HttpGateway(cfg.bridge_url, cfg.relay_secret, cfg.path)
    amazon = AmazonApi(HttpxApiClient(cfg.api_timeout_s, cfg.api_ca_bundle or True))
    sb = skill_builder(SkillDeps(cfg, gateway, amazon))
    sb.skill_id = apps[0]  # type: ignore[assignment]
    handler: Handler = sb.lambda_handler()  # type: ignore[assignment]
    return handler


_handler: Handler | None = None


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _handler
    if _handler is None:  # built once per Lambda container, after its environment is set
        _handler = build_lambda_handler()
    return _handler(event, context)
