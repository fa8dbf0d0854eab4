"""Helpers the tests share: paths, real servers and processes, an embedded bridge with its receiver,
factories. Tests import them from here; tests/conftest.py only holds fixtures and hooks."""
