"""Generators of the device catalogue from the ecosystems (docs/devices/catalogue.md)."""
