"""EIDO over WebSocket (NENA-STA-024.1a): the bridge as notifier, a police CAD as subscriber.

`messages` validates and builds the JSON messages (hand-written schemas from the standard's tables, in
`messages.schema.json`), `hub` holds subscriptions and incidents and waits for acknowledgements, `server` runs the
mutual-TLS WebSocket endpoint and the EIDO retrieval endpoint, `sink` is the `sosbridge.sinks` plug-in
`eido_ws`. See docs/platform/eido-websocket.md.
"""
