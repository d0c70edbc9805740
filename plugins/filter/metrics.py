# Copyright: metalab contributors
# Apache-2.0
"""The metrics role's settings, checked on the controller: which addresses may scrape node_exporter."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Dict, List

DOCUMENTATION = r"""
name: metrics_scrapers
short_description: Validate the addresses that may scrape node_exporter, split by family
description:
  - Checks every entry of C(lab_metrics_scrapers) (one address such as C(192.0.2.10) or a network such as
    C(10.20.0.0/24) or C(2001:db8::/64)) and returns them by family for the host firewall (roles/base).
  - A bad entry, or one that admits every address (C(0.0.0.0/0), C(::/0)), raises an error naming its index and
    value, before any host is changed - the metrics name lab users, so they are never open to the whole network.
positional: name
options:
  _input:
    description: The list of addresses or networks.
    type: list
    elements: str
    required: true
  name:
    description: The variable's name, for error messages.
    type: str
    default: lab_metrics_scrapers
"""

EXAMPLES = r"""
__base_metrics_scrapers: "{{ lab_metrics_scrapers | default([]) | metalab.lab.metrics_scrapers }}"
"""

RETURN = r"""
_value:
  description: C({ipv4, ipv6}), each a sorted list of networks in CIDR notation.
  type: dict
"""


class MetricsError(ValueError):
    pass


def metrics_scrapers(entries, name: str = "lab_metrics_scrapers") -> Dict[str, List[str]]:
    if entries is None:
        entries = []
    if not isinstance(entries, (list, tuple)):
        raise MetricsError(f"{name} must be a list of addresses or networks (10.20.0.0/24), not {entries!r}")
    v4: List[ipaddress.IPv4Network] = []
    v6: List[ipaddress.IPv6Network] = []
    for index, entry in enumerate(entries):
        where = f"{name}[{index}]"
        if not isinstance(entry, str) or not entry.strip():
            raise MetricsError(f"{where}: {entry!r} is not an address or network such as 192.0.2.10 or 10.20.0.0/24")
        try:
            net = ipaddress.ip_network(entry.strip(), strict=True)
        except ValueError as exc:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f" (did you mean {ipaddress.ip_network(entry.strip(), strict=False)}?)"
            raise MetricsError(f"{where}: {entry!r} is not an address or network: {exc}{hint}") from None
        if net.prefixlen == 0:
            raise MetricsError(
                f"{where}: {entry!r} admits every address, but the metrics name lab users; name the scraping hosts"
            )
        if isinstance(net, ipaddress.IPv4Network):
            v4.append(net)
        else:
            v6.append(net)
    return {
        "ipv4": [str(n) for n in ipaddress.collapse_addresses(v4)],
        "ipv6": [str(n) for n in ipaddress.collapse_addresses(v6)],
    }


def _ansible_error(func):
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except MetricsError as exc:
            from ansible.errors import AnsibleFilterError

            raise AnsibleFilterError(str(exc)) from None

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


class FilterModule:
    def filters(self):
        return {"metrics_scrapers": _ansible_error(metrics_scrapers)}
