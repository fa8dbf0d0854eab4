"""Raw-socket checks for the listener tests."""

from __future__ import annotations

import socket


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Did the other end close the connection within `timeout` (EOF or a reset)?"""
    sock.settimeout(timeout)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
