"""The homes volume and quotas on a VM with two NVMe disks, after a reboot (side_effect.yml)."""

import json

import pytest

from metalab.rules import validate_users

HOMES = "/srv/metalab/homes"
QUOTAS_MB = {"alice": 20, "bob": 30, "carol": 40}


def _namespace(host, name):
    data = json.loads(host.check_output(f"lsblk --json -b -o NAME,SERIAL,FSTYPE,LABEL,MOUNTPOINT /dev/{name}"))
    return data["blockdevices"][0]


def test_homes_on_the_empty_namespace_with_quota_options(host):
    mount = host.mount_point(HOMES)
    assert mount.exists, "the homes volume is mounted again after the reboot"
    assert mount.filesystem == "xfs"
    assert mount.device == "/dev/nvme0n1"
    assert {"usrquota", "prjquota"} <= set(mount.options) or "uquota" in mount.options
    assert _namespace(host, "nvme0n1")["label"] == "metalab-home"
    fstab = host.file("/etc/fstab").content_string
    assert f" {HOMES} xfs " in fstab and "UUID=" in fstab


def test_homes_mounted_nosuid_nodev_after_the_reboot(host):
    # From fstab (the mount after side_effect.yml's reboot): set-uid bits and device nodes in homes mean nothing.
    options = host.mount_point(HOMES).options
    assert "nosuid" in options and "nodev" in options, options
    line = next(x for x in host.file("/etc/fstab").content_string.splitlines() if f" {HOMES} xfs " in x)
    assert {"nosuid", "nodev"} <= set(line.split()[3].split(","))


def test_the_preformatted_namespace_and_its_file_are_untouched(host):
    precious = _namespace(host, "nvme1n1")
    assert precious["fstype"] == "ext4" and precious["label"] == "precious"
    expected = host.check_output("cat /root/.precious-prepared")
    host.check_output("mkdir -p /mnt/check && mount -o ro /dev/nvme1n1 /mnt/check")
    try:
        assert host.check_output("sha256sum /mnt/check/thesis.pdf").split()[0] == expected
    finally:
        host.run("umount /mnt/check")


@pytest.mark.parametrize("name", sorted(QUOTAS_MB))
def test_writing_past_the_quota_fails_and_earlier_files_survive(host, name):
    before = host.check_output(f"cat /root/before-reboot.{name}")
    result = host.run(
        f"runuser -u lab-{name} -- dd if=/dev/zero of={HOMES}/{name}/fill bs=1M count={QUOTAS_MB[name] + 20}"
    )
    try:
        assert result.rc != 0
        assert "Disk quota exceeded" in result.stderr
        written = int(host.check_output(f"stat -c %s {HOMES}/{name}/fill"))
        # The hard limit counts the 5 MB written before the reboot too.
        assert written <= (QUOTAS_MB[name] - 5) * 1024 * 1024
        assert written >= (QUOTAS_MB[name] - 7) * 1024 * 1024, "the quota is this user's, not a smaller one"
        assert host.check_output(f"sha256sum {HOMES}/{name}/before-reboot.bin").split()[0] == before
    finally:
        host.run(f"rm -f {HOMES}/{name}/fill")


def test_root_is_not_limited_by_lab_quotas(host):
    result = host.run(f"dd if=/dev/zero of={HOMES}/root-fill bs=1M count=100 && rm -f {HOMES}/root-fill")
    assert result.rc == 0, result.stderr


def test_naming_the_preformatted_disk_without_allow_format_is_refused(host):
    result = host.ansible(
        "metalab.lab.homes_volume",
        "device=/dev/nvme1n1 path=/srv/other fstype=xfs label=metalab-home allow_format=false",
        become=True,
        check=False,
    )
    # testinfra hands back the module's result without Ansible's "failed" flag: the message is the verdict.
    assert "refusing to format" in result["msg"], result
    assert "/dev/nvme1n1" in result["msg"]
    assert "lab_homes_allow_format" in result["msg"]
    assert _namespace(host, "nvme1n1")["fstype"] == "ext4"
    test_the_preformatted_namespace_and_its_file_are_untouched(host)


def test_removing_a_user_archives_the_home_first(host):
    host.check_output(
        f"runuser -u lab-dave -- sh -c 'mkdir -p {HOMES}/dave/work && echo notebook > {HOMES}/dave/work/a.ipynb'"
    )
    listing_before = host.check_output(f"cd {HOMES}/dave && find . -type f -exec sha256sum {{}} + | sort")
    # The module takes the users as the play resolves them on the controller (metalab.lab.resolve_lab_users).
    resolved = validate_users([{"name": "dave", "state": "absent"}], homes_root=HOMES)
    assert resolved["errors"] == []
    result = host.ansible(
        "metalab.lab.lab_users",
        json.dumps({"users": resolved["users"], "homes_root": HOMES, "quota_backend": "xfs", "quota_mount": HOMES}),
        become=True,
        check=False,
    )  # fmt: skip
    assert result.get("changed"), result
    archive = result["archives"][0]["path"]
    assert not host.user("lab-dave").exists
    assert not host.file(f"{HOMES}/dave").exists
    assert host.file(archive).exists and host.file(archive + ".sha256").exists
    assert host.run(f"cd {archive.rsplit('/', 1)[0]} && sha256sum -c {archive}.sha256").rc == 0
    host.check_output(f"rm -rf /tmp/unpacked && mkdir /tmp/unpacked && tar -xzf {archive} -C /tmp/unpacked")
    root = host.check_output("ls /tmp/unpacked")
    listing_after = host.check_output(f"cd /tmp/unpacked/{root} && find . -type f -exec sha256sum {{}} + | sort")
    assert listing_after == listing_before


def test_home_usage_reads_the_xfs_quota_report(host):
    """metalab-guard home-usage (what the usage file's timer runs, session_limits role) on real XFS quotas: its source
    is "quota" and each user's bytes are xfs_quota's. This scenario has no session_limits, so the guard's package is
    copied to a temporary directory and run from there with a config naming the lab users."""
    import base64
    import io
    import tarfile
    from pathlib import Path

    src = Path(__file__).resolve().parents[3] / "src"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in ("metalab/__init__.py", "metalab/rules.py", "metalab/host/__init__.py", "metalab/host/guard"):
            tar.add(src / rel, arcname=rel, filter=lambda t: None if "__pycache__" in t.name else t)
    work = host.check_output("mktemp -d")
    try:
        host.check_output(f"echo {base64.b64encode(buf.getvalue()).decode()} | base64 -d | tar -xzf - -C {work}")
        users = {}
        for name, mb in QUOTAS_MB.items():
            uid = int(host.check_output(f"id -u lab-{name}"))
            users[name] = {"uid": uid, "gid": uid, "home": f"{HOMES}/{name}", "quota_bytes": mb * 1024 * 1024}
        config = {"users": users, "ledger": f"{work}/ledger.sqlite", "usage": {"homes_mount": HOMES}}
        host.check_output(f"echo {base64.b64encode(json.dumps(config).encode()).decode()} | base64 -d > {work}/g.json")
        data = json.loads(
            host.check_output(
                f"PYTHONPATH={work} python3 -m metalab.host.guard.cli --config {work}/g.json home-usage --json"
            )
        )
        report = host.check_output(f"xfs_quota -x -c 'report -u -b -n -N' {HOMES}")
        kib = {int(f[0][1:]): int(f[1]) for f in (line.split() for line in report.splitlines()) if f and f[0][0] == "#"}
        for name, mb in QUOTAS_MB.items():
            assert data[name]["source"] == "quota", data[name]
            assert data[name]["used_bytes"] == kib[users[name]["uid"]] * 1024
            assert data[name]["used_bytes"] >= 5 * 1024 * 1024  # the 5 MB written before the reboot
            assert data[name]["limit_bytes"] == mb * 1024 * 1024
    finally:
        host.run(f"rm -rf {work}")
