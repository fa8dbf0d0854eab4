"""The alert ledger: intake rules, one commit per change, lifecycle events, supervision (check-ins) and
emergency-contact notifications. See docs/architecture.md."""
