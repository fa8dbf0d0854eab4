"""Serial-attached devices: GSM modems (SMS), NMEA GPS, Contact ID receivers and DIY framed buttons. See adapter.py."""

from device_adapters.serial.adapter import SerialAdapter

__all__ = ["SerialAdapter"]
