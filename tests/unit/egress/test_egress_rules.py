"""The nftables rules of the runtimes' egress filter, rendered from the role's template with planned inputs."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from ansible_collections.metalab.lab.plugins.filter.egress import egress_networks, egress_proxy

TEMPLATE = Path(__file__).resolve().parents[3] / "roles/container_engine/templates/etc/metalab/egress.nft.j2"


def render(deny, proxy="http://10.213.3.1:3128", dns=(), proxy_addresses=None):
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True
    )  # as Ansible
    env.filters["comment"] = lambda text: "#\n# " + text + "\n#"
    planned = egress_proxy(proxy)
    addresses = proxy_addresses if proxy_addresses is not None else ([planned["address"]] if planned else [])
    return env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="Ansible managed",
        container_engine_egress_wrapper="/usr/local/libexec/metalab/slirp4netns",
        container_engine_egress_group="metalab-egress",
        container_engine_egress_unit="metalab-egress.service",
        __container_engine_egress_deny=egress_networks(deny),
        __container_engine_egress_proxy=planned,
        __container_engine_egress_proxy_v4=[a for a in addresses if ":" not in a],
        __container_engine_egress_proxy_v6=[a for a in addresses if ":" in a],
        __container_engine_egress_dns_v4=[a for a in dns if ":" not in a],
        __container_engine_egress_dns_v6=[a for a in dns if ":" in a],
    )


def runtime_chain(text):
    return text.split("chain runtime {", 1)[1].split("\n\t}", 1)[0]


def test_only_the_runtimes_group_is_filtered_and_the_table_alone_is_replaced():
    text = render(["10.0.0.0/8"])
    assert "flush ruleset" not in text
    assert text.index("table inet metalab_egress {}") < text.index("delete table inet metalab_egress")
    output = text.split("chain output {", 1)[1].split("\n\t}", 1)[0]
    # Positive match: packets without a socket (kernel resets, TIME_WAIT) never enter the runtime chain.
    assert "meta skgid metalab-egress jump runtime" in output
    assert "!=" not in output


def test_proxy_and_resolvers_come_before_every_refusal():
    chain = runtime_chain(render(["10.0.0.0/8"], dns=["127.0.0.53", "fd00::53"]))
    lines = [line.strip() for line in chain.strip().splitlines()]
    assert lines[0].startswith("ip daddr 10.213.3.1 tcp dport 3128 accept")
    assert lines[1].startswith("ip daddr 127.0.0.53 meta l4proto { tcp, udp } th dport 53 accept")
    assert lines[2].startswith("ip6 daddr fd00::53 meta l4proto { tcp, udp } th dport 53 accept")
    assert lines[3].startswith("fib daddr type local goto refuse")
    assert all("goto refuse" in line for line in lines[3:])


def test_a_proxy_named_by_host_uses_its_resolved_addresses():
    chain = runtime_chain(
        render([], proxy="http://proxy.example.org:8080", proxy_addresses=["192.0.2.7", "2001:db8::7"])
    )
    assert "ip daddr 192.0.2.7 tcp dport 8080 accept" in chain
    assert "ip6 daddr 2001:db8::7 tcp dport 8080 accept" in chain


def test_no_proxy_no_exception():
    assert "accept" not in runtime_chain(render(["10.0.0.0/8"], proxy=""))


@pytest.mark.parametrize(
    ("deny", "v4", "v6"),
    [
        (["10.0.0.0/8", "10.1.0.0/16", "fc00::/7"], "elements = { 10.0.0.0/8 }", "elements = { fc00::/7 }"),
        ([], None, None),
    ],
)
def test_deny_sets(deny, v4, v6):
    text = render(deny)
    deny_v4 = text.split("set deny_v4 {", 1)[1].split("}", 1)[0] + "}"
    deny_v6 = text.split("set deny_v6 {", 1)[1].split("}", 1)[0] + "}"
    for block, want in ((deny_v4, v4), (deny_v6, v6)):
        if want:
            assert want in block
        else:
            assert "elements" not in block
    # Loopback, "this network" and link-local are refused whatever the inventory says.
    assert "elements = { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16 }" in text
    assert "elements = { ::/127, fe80::/10 }" in text
