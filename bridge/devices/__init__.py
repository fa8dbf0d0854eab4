"""What a device is and how its frames are read: YAML profiles, the decoder contract, device files
(import/export). See docs/architecture.md and docs/devices/index.md."""
