"""The vocabulary and pure rules every wing shares: the model, the alert lifecycle, the contact envelope,
geography, text cleaning, platform messages and status events. Imports nothing of bridge/ but infra.
See docs/architecture.md."""
