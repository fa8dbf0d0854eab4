"""One ingress for every transport: identify → admit → decode → submit → Receipt (see ingress.py)."""

from bridge.ingress.binding import Claim
from bridge.ingress.ingress import Ingress
from bridge.ingress.receipt import Receipt

__all__ = ["Claim", "Ingress", "Receipt"]
