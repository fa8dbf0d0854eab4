"""The reference contact platform (`sosbridge receiver`): verifies, validates and stores contacts, answers
with ack/resolve callbacks, and serves the operator console. Not part of the bridge.
See docs/platform/webhook.md."""
