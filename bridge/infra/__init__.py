"""Plumbing with no domain knowledge: metrics, logs, plug-in loading, private files, rate limits, the
HTTP server helpers and health monitors. The bottom of the house: imports nothing else of bridge/.
See docs/architecture.md."""
