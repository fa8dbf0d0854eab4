"""The throwaway test CA lives with the virtual smart speaker in the simulator; tests share it."""

from simulator.devices.alexa import CERT_URL, Leaf, TestCA

__all__ = ["CERT_URL", "Leaf", "TestCA"]
