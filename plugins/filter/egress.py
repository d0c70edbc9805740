# Copyright: metalab contributors
# Apache-2.0
"""The runtimes' egress filter, planned on the controller: which networks to refuse, where the lab's proxy is."""

from __future__ import annotations

import contextlib
import ipaddress
import urllib.parse
from typing import Dict, List

from ansible_collections.metalab.lab.plugins.module_utils.rules import NetworkListError, networks_by_family

DOCUMENTATION = r"""
name: egress_networks
short_description: Validate and merge the networks runtimes may not reach
description:
  - Checks every entry of C(lab_runtime_egress_deny) (a CIDR such as C(10.0.0.0/8) or C(fc00::/7), or one address)
    and returns the networks by family, overlapping and adjacent ones merged, so that nftables interval sets never
    see two elements that overlap.
  - A bad entry raises an error naming its index and value, before any host is changed.
positional: name
options:
  _input:
    description: The list of networks.
    type: list
    elements: str
    required: true
  name:
    description: The variable's name, for error messages.
    type: str
    default: lab_runtime_egress_deny
"""

EXAMPLES = r"""
__container_engine_egress_deny: "{{ lab_runtime_egress_deny | metalab.lab.egress_networks }}"
__container_engine_egress_proxy: "{{ lab_http_proxy | metalab.lab.egress_proxy }}"
"""

RETURN = r"""
_value:
  description: C({ipv4, ipv6}), each a sorted list of networks in CIDR notation.
  type: dict
"""


class EgressError(ValueError):
    pass


def egress_networks(entries, name: str = "lab_runtime_egress_deny") -> Dict[str, List[str]]:
    try:
        return networks_by_family(
            entries,
            name,
            "10.0.0.0/8 or fc00::/7",
            "would refuse every address; set lab_runtime_egress_filter instead",
        )
    except NetworkListError as exc:
        raise EgressError(str(exc)) from None


def egress_proxy(url, name: str = "lab_http_proxy") -> Dict[str, object]:
    """{host, port, address} of the proxy URL; {} when there is none. address is set when host is an IP literal."""
    if url is None or (isinstance(url, str) and not url.strip()):
        return {}
    if not isinstance(url, str):
        raise EgressError(f"{name} must be a URL such as http://proxy.example.org:3128, not {url!r}")
    text = url.strip()
    parsed = urllib.parse.urlsplit(text if "://" in text else "http://" + text)
    try:
        port = parsed.port
    except ValueError:
        raise EgressError(f"{name}: {url!r} has a bad port") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise EgressError(f"{name}: {url!r} is not an http(s) proxy URL such as http://proxy.example.org:3128")
    host = parsed.hostname
    address = ""
    with contextlib.suppress(ValueError):
        address = str(ipaddress.ip_address(host))
    return {
        "host": host,
        "port": port if port is not None else (443 if parsed.scheme == "https" else 80),
        "address": address,
    }


def _ansible_error(func):
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EgressError as exc:
            from ansible.errors import AnsibleFilterError

            raise AnsibleFilterError(str(exc)) from None

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


class FilterModule:
    def filters(self):
        return {"egress_networks": _ansible_error(egress_networks), "egress_proxy": _ansible_error(egress_proxy)}
