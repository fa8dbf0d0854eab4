"""A MESSAGE's final response as an outbox outcome (RFC 8876 §5; the table in docs/platform/sip-message.md).

Pure. 2xx delivered (an AlertMsg-Error in a 200 still means delivered: the caller logs and counts it);
415 and 425 permanent for this rendering (the forwarder fails a critical contact over to the route's
fallback and keeps retrying); 501 and other 3xx/4xx/6xx permanent; 408, 480, 500, 503, 504 and other 5xx
retried, honouring Retry-After.
"""

from __future__ import annotations

from bridge.delivery.sinks.base import Delivered, Outcome, Permanent, Retry
from bridge.delivery.sip.response import SipResponse, accepted_types, alertmsg_error, retry_after_s

_RETRY_4XX = frozenset({408, 480})


def classify(response: SipResponse) -> Outcome:
    status = response.status
    if status < 200:  # the transport waits for a final answer; a provisional one is never an outcome
        return Retry(f"SIP {status}: no final response")
    if 200 <= status < 300:
        return Delivered(status)
    if status == 415:
        accepts = ", ".join(accepted_types(response)) or "no Accept header"
        return Permanent(f"SIP 415: the PSAP accepts {accepts}"[:300])
    if status == 425:
        err = alertmsg_error(response)
        detail = "no AlertMsg-Error"
        if err is not None:
            detail = f"AlertMsg-Error {err.code}" + (f" {err.message}" if err.message else "")
        return Permanent(f"SIP 425 Bad Alert Message: {detail}"[:300])
    if status == 501:
        return Permanent("SIP 501 Not Implemented: the PSAP does not take MESSAGE")
    if status in _RETRY_4XX or 500 <= status < 600:
        return Retry(f"SIP {status} {response.reason}"[:300], retry_after_s(response))
    return Permanent(f"SIP {status} {response.reason}"[:300])
