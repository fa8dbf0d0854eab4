"""Composition: settings, security checks, start-up, the runtime that wires the wings, the HTTP API and the
command line. The top of the house: nothing in bridge/ imports it. See docs/architecture.md."""
