"""SIA DC-09 receiver on TCP and UDP (`SOSBRIDGE_DC09_PORT`, off unless set): alarm panels, telecare See adapter.py."""

from device_adapters.dc09.adapter import Dc09Adapter

__all__ = ["Dc09Adapter"]
