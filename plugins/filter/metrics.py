# Copyright: metalab contributors
# Apache-2.0
"""The metrics role's settings, checked on the controller: which addresses may scrape node_exporter."""

from __future__ import annotations

from typing import Dict, List

from ansible_collections.metalab.lab.plugins.module_utils.rules import NetworkListError, networks_by_family

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
    try:
        return networks_by_family(
            entries,
            name,
            "192.0.2.10 or 10.20.0.0/24",
            "admits every address, but the metrics name lab users; name the scraping hosts",
        )
    except NetworkListError as exc:
        raise MetricsError(str(exc)) from None


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
