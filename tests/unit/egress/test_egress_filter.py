"""metalab.lab.egress_networks / egress_proxy: the runtimes' egress settings, checked before any host changes."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.metalab.lab.plugins.filter.egress import (
    EgressError,
    FilterModule,
    egress_networks,
    egress_proxy,
)

DEFAULTS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10"]


def test_defaults_split_by_family():
    assert egress_networks(DEFAULTS) == {
        "ipv4": ["10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"],
        "ipv6": ["fc00::/7", "fe80::/10"],
    }


def test_overlapping_and_adjacent_networks_are_merged():
    # nftables refuses overlapping elements in an interval set.
    nets = ["10.1.0.0/16", "10.0.0.0/8", "192.168.0.0/24", "192.168.1.0/24", "fd00:ec2::254", "fc00::/7"]
    assert egress_networks(nets) == {"ipv4": ["10.0.0.0/8", "192.168.0.0/23"], "ipv6": ["fc00::/7"]}


def test_single_addresses_and_empty_lists():
    assert egress_networks(["203.0.113.7", " 2001:db8::1 "]) == {
        "ipv4": ["203.0.113.7/32"],
        "ipv6": ["2001:db8::1/128"],
    }
    assert egress_networks([]) == {"ipv4": [], "ipv6": []}
    assert egress_networks(None) == {"ipv4": [], "ipv6": []}


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        (["10.0.0.0/8", "10.0.0.300/8"], "lab_runtime_egress_deny[1]: '10.0.0.300/8' is not an address or network"),
        (["10.1.2.3/8"], "did you mean 10.0.0.0/8?"),
        (["10.0.0.0/33"], "lab_runtime_egress_deny[0]: '10.0.0.0/33'"),
        (["intranet.example.org"], "lab_runtime_egress_deny[0]: 'intranet.example.org' is not an address or network"),
        (["", "10.0.0.0/8"], "lab_runtime_egress_deny[0]: '' is not an address or network"),
        ([10], "lab_runtime_egress_deny[0]: 10 is not an address or network"),
        (["0.0.0.0/0"], "would refuse every address"),
        ("10.0.0.0/8", "must be a list"),
    ],
)
def test_bad_entries_are_named(entries, needle):
    with pytest.raises(EgressError) as caught:
        egress_networks(entries)
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://10.213.3.1:3128", {"host": "10.213.3.1", "port": 3128, "address": "10.213.3.1"}),
        ("http://proxy.example.org:8080/", {"host": "proxy.example.org", "port": 8080, "address": ""}),
        ("http://user:secret@[fd00::1]:3128", {"host": "fd00::1", "port": 3128, "address": "fd00::1"}),
        ("proxy.example.org:3128", {"host": "proxy.example.org", "port": 3128, "address": ""}),
        ("http://proxy.example.org", {"host": "proxy.example.org", "port": 80, "address": ""}),
        ("https://proxy.example.org", {"host": "proxy.example.org", "port": 443, "address": ""}),
        ("", {}),
        (None, {}),
    ],
)
def test_proxy_address_and_port(url, want):
    assert egress_proxy(url) == want


@pytest.mark.parametrize("url", ["socks5://proxy:1080", "http://:3128", "http://proxy:99999", "http://proxy:port"])
def test_bad_proxy_urls_are_refused(url):
    with pytest.raises(EgressError, match="lab_http_proxy"):
        egress_proxy(url)


def test_filters_raise_ansible_errors_naming_the_entry():
    filters = FilterModule().filters()
    with pytest.raises(AnsibleFilterError, match=r"lab_runtime_egress_deny\[0\]"):
        filters["egress_networks"](["nope"])
    assert filters["egress_proxy"]("http://127.0.0.1:3128")["port"] == 3128
