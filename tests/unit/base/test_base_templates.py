"""The base role's host baseline as rendered from its own defaults and platform vars (ansible's Templar):
firewall rules, sshd drop-in, sysctls, kernel modules, PAM anchors per platform."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from nft import nft_check

ROLE = Path(__file__).resolve().parents[3] / "roles" / "base"
COMMON = ROLE.parent / "common"
PLATFORMS = ["Debian", "Ubuntu", "Amazon"]


def render(template, platform="Debian", **extra):
    loader = DataLoader()
    variables = {}
    # common's defaults first (a dependency of every role), then the role's own
    for path in (
        COMMON / "defaults/main.yml",
        ROLE / "defaults/main.yml",
        ROLE / "vars/main.yml",
        ROLE / f"vars/{platform}.yml",
    ):
        variables.update(loader.load_from_file(str(path), trusted_as_template=True))
    variables.update({"ansible_managed": "managed by metalab"}, **extra)
    return Templar(loader=loader, variables=variables).template(trust_as_template(template))


def template(path):
    return (ROLE / "templates" / path).read_text()


def firewall(**extra):
    extra.setdefault("__base_sshd_probe", {"stdout_lines": ["port 22"]})
    return render(template("etc/metalab/firewall.nft.j2"), **extra)


def test_firewall_defaults_admit_ssh_from_anywhere_and_the_front_door(tmp_path):
    text = firewall()
    assert "elements = { 0.0.0.0/0 }" in text and "elements = { ::/0 }" in text
    assert "type filter hook input priority filter; policy drop;" in text
    assert "tcp dport { 80, 443 } accept" in text
    assert "ip saddr @admin_v4 tcp dport { 22 } accept" in text
    assert "flush ruleset" not in text and "hook forward" not in text and "hook output" not in text
    assert text.index("table inet metalab {}") < text.index("delete table inet metalab")  # atomic, repeatable
    nft_check(text, tmp_path)


def test_firewall_admin_networks_ports_and_sshd_ports(tmp_path):
    text = firewall(
        lab_admin_networks=["192.0.2.0/24", "198.51.100.7", "2001:db8::/32"],
        __base_sshd_probe={"stdout_lines": ["port 2222", "port 22", "rootlogin /etc/ssh/sshd_config"]},
        frontdoor_https_port=8443,
        base_firewall_tcp_ports=[9100],
    )
    assert "elements = { 192.0.2.0/24, 198.51.100.7 }" in text
    assert "elements = { 2001:db8::/32 }" in text
    assert "tcp dport { 80, 8443, 9100 } accept" in text
    assert "tcp dport { 22, 2222 } accept" in text
    nft_check(text, tmp_path)


def test_firewall_ipv4_only_admins_get_an_empty_ipv6_set(tmp_path):
    text = firewall(lab_admin_networks=["10.0.0.0/8"])
    v6 = text[text.index("set admin_v6") : text.index("chain input")]
    assert "elements" not in v6
    nft_check(text, tmp_path)


def test_firewall_without_a_port_from_sshd_admits_22():
    assert "tcp dport { 22 } accept" in firewall(__base_sshd_probe={"stdout_lines": []})


@pytest.mark.parametrize("unset", [True, False])
def test_sshd_dropin(unset, tmp_path):
    text = render(template("etc/ssh/sshd_config.d/10-metalab.conf.j2"), __base_sshd_root_login_unset=unset)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert "DenyGroups labusers" in lines
    assert ("PermitRootLogin prohibit-password" in lines) is unset  # a value set elsewhere is kept
    assert "PasswordAuthentication no" not in lines[: lines.index("Match Group labusers")]  # admins untouched
    match = lines.index("Match Group labusers")
    assert {"AuthorizedKeysFile none", "AllowTcpForwarding no", "AllowAgentForwarding no"} <= set(lines[match:])
    assert not [line for line in lines[match + 1 :] if line.startswith("Match")]  # the block ends the file
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or os.geteuid() != 0:
        return
    dropin = tmp_path / "10-metalab.conf"
    dropin.write_text(text)
    done = subprocess.run([sshd, "-t", "-f", str(dropin)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_sysctls_apply_only_what_differs_and_exists():
    # sshd.yml's one probe prints sshd's ports, the current sysctls and whether /proc/sys is writable.
    current = ["kernel.dmesg_restrict = 0", "kernel.kptr_restrict = 2", "fs.suid_dumpable = 1"]
    probe = {"stdout_lines": ["port 22", *("sysctl " + line for line in current), "procsys writable"]}
    applied = render("{{ __base_sysctl_apply }}", __base_sshd_probe=probe)
    assert applied == ["kernel.dmesg_restrict=1", "fs.suid_dumpable=0"]  # yama etc. missing here: not applied
    assert render("{{ __base_proc_sys_writable }}", __base_sshd_probe=probe) is True
    read_only = {"stdout_lines": ["port 22", *("sysctl " + line for line in current)]}
    assert render("{{ __base_proc_sys_writable }}", __base_sshd_probe=read_only) is False
    assert render("{{ __base_sysctl_apply }}", __base_sshd_probe={"stdout_lines": ["port 22"]}) == []


def test_sysctl_file_marks_optional_keys():
    text = render(template("etc/sysctl.d/90-metalab.conf.j2"))
    assert "-kernel.yama.ptrace_scope = 1" in text.splitlines()
    assert "kernel.dmesg_restrict = 1" in text.splitlines()
    assert "net.ipv4.ip_forward" not in text  # podman's networks need it: never touched here


def test_modprobe_refuses_each_module():
    text = render(template("etc/modprobe.d/metalab.conf.j2"))
    for module in ("dccp", "sctp", "rds", "tipc", "cramfs", "udf"):
        assert f"install {module} /bin/false" in text and f"blacklist {module}" in text


SAMPLE_PAM = {
    "Debian": "@include common-auth\naccount    required     pam_nologin.so\n@include common-account\n",
    "Ubuntu": "@include common-auth\n@include common-account\n@include common-session\n",
    "Amazon": "auth       substack     password-auth\naccount    required     pam_nologin.so\n"
    "account    include      password-auth\npassword   include      password-auth\n",
}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_pam_anchor_and_services_per_platform(platform):
    anchor = render("{{ __base_pam_account_after }}", platform=platform)
    lines = SAMPLE_PAM[platform].splitlines()
    hits = [i for i, line in enumerate(lines) if re.search(anchor, line)]
    assert hits and lines[hits[-1]].split()[0] in ("account", "@include")
    services = render("{{ __base_pam_services }}", platform=platform)
    assert {"sshd", "login", "su", "su-l", "systemd-user"} <= set(services)
    assert ("crond" if platform == "Amazon" else "cron") in services
    assert "nftables" in render("{{ __base_packages }}", platform=platform)


@pytest.mark.parametrize(("platform", "service", "package"), [("Debian", "cron", "cron"), ("Ubuntu", "cron", "cron"),
                                                              ("Amazon", "crond", "cronie")])  # fmt: skip
def test_the_cron_daemon_is_installed_enabled_and_started(platform, service, package):
    """metalab-guard runs from cron: on Amazon Linux 2023 cronie is installed but nothing enables or starts crond."""
    assert render("{{ __base_cron_service }}", platform=platform) == service
    assert package in render("{{ __base_packages }}", platform=platform)
    tasks = DataLoader().load_from_file(str(ROLE / "tasks/packages.yml"))
    [task] = [t for t in tasks if t.get("ansible.builtin.service", {}).get("name") == "{{ __base_cron_service }}"]
    assert task["ansible.builtin.service"]["enabled"] is True
    assert task["ansible.builtin.service"]["state"] == "started"


def test_pam_paths_add_the_copy_of_a_vendor_systemd_user():
    found = {"files": [{"path": "/etc/pam.d/sshd"}, {"path": "/usr/lib/pam.d/systemd-user"}, {"path": "/etc/at.deny"}]}
    paths = render("{{ __base_pam_paths }}", __base_login_found=found)
    assert paths == ["/etc/pam.d/sshd", "/etc/pam.d/systemd-user"]


@pytest.mark.parametrize("verdict", [0, 255])
def test_sshd_dropin_is_checked_with_the_whole_configuration(tmp_path, verdict):
    # A stand-in sshd records the main file it was given; the candidate comes first, then sshd_config.
    fake = tmp_path / "sshd"
    fake.write_text(f'#!/bin/sh\n[ "$1 $2" = "-t -f" ] && cp "$3" "$3.seen"\nexit {verdict}\n')
    fake.chmod(0o755)
    candidate = tmp_path / "candidate.conf"
    candidate.write_text("DenyGroups labusers\n")
    command = render("{{ __base_sshd_validate }}", __base_sshd=str(fake)) % str(candidate)  # as ansible's validate
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False)
    assert done.returncode == verdict
    seen = Path(str(candidate) + ".main.seen").read_text()
    assert seen == f"Include {candidate}\nInclude /etc/ssh/sshd_config\n"
    assert not Path(str(candidate) + ".main").exists()
