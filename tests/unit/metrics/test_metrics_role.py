"""The metrics role's settings: lab_metrics_scrapers checked on the controller, node_exporter's listen address, and
the host firewall (roles/base) that admits only the scrapers to its port."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible_collections.metalab.lab.plugins.filter.metrics import MetricsError, metrics_scrapers
from nft import nft_check

ROLES = Path(__file__).resolve().parents[3] / "roles"


def render(role: str, template: str, **extra):
    loader = DataLoader()
    variables = {}
    for path in (
        ROLES / "common/defaults/main.yml",
        ROLES / role / "defaults/main.yml",
        ROLES / role / "vars/main.yml",
    ):
        variables.update(loader.load_from_file(str(path), trusted_as_template=True))
    variables.update({"ansible_managed": "managed by metalab", "__base_sshd_probe": {"stdout_lines": ["port 22"]}})
    variables.update(extra)
    # The role vars call the collection's filter, which a bare Templar does not load: the same function here.
    scrapers = extra.get("lab_metrics_scrapers", [])
    variables["__metrics_scrapers"] = metrics_scrapers(scrapers)
    text = (ROLES / role / "templates" / template).read_text()
    return Templar(loader=loader, variables=variables).template(trust_as_template(text))


def test_scrapers_by_family():
    assert metrics_scrapers(["192.0.2.10", "10.20.0.0/24", "2001:db8::/64", "10.20.0.7"]) == {
        "ipv4": ["10.20.0.0/24", "192.0.2.10/32"],
        "ipv6": ["2001:db8::/64"],
    }
    assert metrics_scrapers([]) == {"ipv4": [], "ipv6": []}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            ["10.0.0.1/8"],
            r"lab_metrics_scrapers\[0\]: '10.0.0.1/8' is not an address or network.*did you mean 10.0.0.0/8",
        ),
        (["192.0.2.1", "prometheus.example.org"], r"lab_metrics_scrapers\[1\]: 'prometheus.example.org'"),
        (["0.0.0.0/0"], r"lab_metrics_scrapers\[0\]: '0.0.0.0/0' admits every address"),
        ("10.0.0.0/8", "must be a list"),
        ([""], r"lab_metrics_scrapers\[0\]"),
    ],
)
def test_bad_scrapers_are_named(entries, message):
    with pytest.raises(MetricsError, match=message):
        metrics_scrapers(entries)


def test_node_exporter_on_loopback_unless_scrapers_are_named():
    args = render("metrics", "etc/default/prometheus-node-exporter.j2")
    assert (
        'ARGS="--web.listen-address=127.0.0.1:9100 --collector.textfile.directory=/var/lib/prometheus/node-exporter"'
        in args
    )
    args = render("metrics", "etc/default/prometheus-node-exporter.j2", lab_metrics_scrapers=["192.0.2.10"])
    assert "--web.listen-address=:9100 " in args


def test_firewall_admits_only_the_scrapers_to_node_exporter(tmp_path):
    closed = render("base", "etc/metalab/firewall.nft.j2", lab_metrics="node_exporter")
    assert "9100" not in closed
    # named scrapers but no node_exporter of ours: nothing opened either
    assert "9100" not in render("base", "etc/metalab/firewall.nft.j2", lab_metrics_scrapers=["192.0.2.10"])
    opened = render(
        "base", "etc/metalab/firewall.nft.j2",
        lab_metrics="node_exporter", lab_metrics_scrapers=["192.0.2.10", "2001:db8::/64"], lab_metrics_port=9200,
    )  # fmt: skip
    assert "ip saddr { 192.0.2.10 } tcp dport 9200 accept" in opened
    assert "ip6 saddr { 2001:db8::/64 } tcp dport 9200 accept" in opened
    nft_check(opened, tmp_path)


def test_timers_and_the_metrics_service():
    service = render("metrics", "etc/systemd/system/metalab-metrics.service.j2")
    assert (
        "metalab-guard --config /etc/metalab/guard.json metrics --output /var/lib/prometheus/node-exporter/metalab.prom"
        in service
    )
    usage = render("session_limits", "etc/systemd/system/metalab-home-usage.service.j2")
    assert "home-usage --write" in usage and "IOSchedulingClass=idle" in usage
    timer = render("session_limits", "etc/systemd/system/metalab-home-usage.timer.j2")
    assert "OnUnitActiveSec=5min" in timer
