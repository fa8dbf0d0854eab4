"""RFC 8876 conveyance: each contact as one SIP MESSAGE (RFC 3428) carrying CAP and a PIDF-LO.

`uri` reads a route's target, `message` builds the request (pure), `response` parses answers (pure),
`transport` runs one non-INVITE client transaction over TCP, TLS or UDP, `outcome` maps the final response
onto the outbox, and `sink` ties them into a `sosbridge.sinks` plug-in. See docs/platform/sip-message.md.
"""
