"""The Alexa skill's start-up check, registered under the `sosbridge.checks` entry point group:
`serve` refuses an unsigned Alexa endpoint on real alerts and warns of one on exercises.
See docs/transports/voice.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.app.security import StartupCheck
from skills.alexa.config import AlexaSettings

if TYPE_CHECKING:
    from bridge.app.config import Settings


def startup_check(settings: Settings) -> StartupCheck:
    alexa = AlexaSettings()
    if not alexa.is_enabled or alexa.verify_signature:
        return StartupCheck()
    refusal = None
    if settings.default_status == "actual":
        refusal = (
            "refusing to start: SOSBRIDGE_ALEXA_VERIFY_SIGNATURE=false accepts forged Alexa requests; "
            "it is allowed only with SOSBRIDGE_DEFAULT_STATUS=exercise or test"
        )
    return StartupCheck(
        refusal=refusal,
        warnings=["Alexa request signatures are NOT verified (SOSBRIDGE_ALEXA_VERIFY_SIGNATURE=false): lab use only"],
    )
