"""From the outbox to the platform: the forwarder (lease, send, mark), routing, sinks (webhook, spool,
notifications, SIP MESSAGE in `sip/`, the EIDO notifier in `eido_ws/`) and renderings (JSON, CAP, EIDO,
PIDF-LO). Never climbs back into intake. See docs/architecture.md."""
