"""Which bind addresses stay on this machine (secure-by-default checks of the services)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only listens on this machine (``localhost``, 127/8, ::1).

    A host name other than ``localhost`` counts as open: it may resolve to anything.
    """
    host = host.strip()
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
