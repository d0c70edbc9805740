"""Cached Debian 12 root filesystem and VM disk image for sandboxes.

Both are built once and kept under the cache directory, keyed by a hash of
their recipe, so that a change of the package list rebuilds them and nothing
else does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from metalab.labctl.sandbox.errors import SandboxError

SUITE = "bookworm"
ADMIN_USER = "labadmin"
# nftables is what base and container_engine install anyway: in the image it saves the VM minutes of dpkg.
PACKAGES = (
    "systemd,systemd-sysv,dbus,libpam-systemd,python3,python3-apt,openssh-server,sudo,cron,ca-certificates,"
    "iproute2,iputils-ping,procps,curl,less,kmod,udev,xfsprogs,quota,e2fsprogs,util-linux,gnupg,acl,nftables"
)
VM_PACKAGES = ("linux-image-amd64", "initramfs-tools", "systemd-timesyncd")
# Bump when the customisation below changes: it is part of the cache key.
RECIPE_VERSION = 3


def cache_dir() -> Path:
    return Path(os.environ.get("METALAB_CACHE", "/var/cache/metalab"))


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (never a hard-coded host)."""
    candidates: list[str] = []
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        text = path.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(r"^Suites:.*\b" + SUITE + r"\b", stanza, re.M) and "Types: deb" in stanza:
                match = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if match and "security" not in match.group(1):
                    candidates.append(match.group(1))
    legacy = sources_dir / "sources.list"
    if legacy.is_file():
        for line in legacy.read_text(errors="replace").splitlines():
            # deb [options] URL SUITE COMPONENTS...
            words = [w for w in re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()]
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE and "security" not in words[1]:
                candidates.append(words[1])
    if not candidates:
        raise SandboxError(f"cannot find a Debian {SUITE} mirror in {sources_dir}/sources.list(.d): add one")
    return candidates[0].rstrip("/")


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], log: Path, **kwargs) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs)
    if result.returncode != 0:
        raise SandboxError(f"'{' '.join(argv[:3])} ...' failed (exit {result.returncode}); see {log}")


def _chroot(tree: Path, script: str, log: Path) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    with _chroot_mounts(tree):
        _run(["chroot", str(tree), "/bin/sh", "-euxc", script], log, env=env)


@contextlib.contextmanager
def _chroot_mounts(tree: Path) -> Iterator[None]:
    mounted: list[Path] = []
    try:
        for fs, target in (("proc", "proc"), ("sysfs", "sys"), ("devtmpfs", "dev")):
            point = tree / target
            subprocess.run(["mount", "-t", fs, fs, str(point)], check=True)
            mounted.append(point)
        yield
    finally:
        for point in reversed(mounted):
            subprocess.run(["umount", "-l", str(point)], check=False)


def _prune(base: Path, keep: str) -> None:
    """Remove builds of older recipes, except those a running sandbox still uses."""
    in_use = Path("/proc/mounts").read_text() + "".join(
        Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        for pid in os.listdir("/proc")
        if pid.isdigit() and os.path.exists(f"/proc/{pid}/cmdline")
    )
    for stale in base.iterdir():
        if stale.is_dir() and stale.name != keep and not stale.name.endswith(".tmp") and str(stale) not in in_use:
            shutil.rmtree(stale, ignore_errors=True)


_CUSTOMISE = f"""
useradd --create-home --shell /bin/bash --comment 'metalab sandbox admin' {ADMIN_USER}
echo '{ADMIN_USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/90-{ADMIN_USER}
chmod 0440 /etc/sudoers.d/90-{ADMIN_USER}
install -d -m 0700 -o {ADMIN_USER} -g {ADMIN_USER} /home/{ADMIN_USER}/.ssh
printf 'PasswordAuthentication no\\nUseDNS no\\nPermitRootLogin no\\n' > /etc/ssh/sshd_config.d/metalab-sandbox.conf
# A fresh server has no machine-id of its own yet; systemd makes one at first boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
"""


def rootfs(log: Path | None = None) -> Path:
    """Path of the cached Debian root filesystem, built on first use."""
    mirror = debian_mirror()
    key = _key("rootfs", SUITE, PACKAGES, RECIPE_VERSION, _CUSTOMISE)
    base = cache_dir() / "rootfs"
    tree = base / key
    with _locked(base / f"{key}.lock"):
        if (tree / ".metalab-complete").is_file():
            return tree
        work = base / f"{key}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log = log or base / f"{key}.log"
        log.write_text("")
        _run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(work), mirror], log)
        _chroot(work, _CUSTOMISE, log)
        (work / ".metalab-complete").write_text(key + "\n")
        work.rename(tree)
        _prune(base, keep=key)
        return tree


_VM_CUSTOMISE = """
apt-get update
apt-get install -y --no-install-recommends {packages}
apt-get clean
mkdir -p /etc/systemd/network
printf '[Match]\\nName=en*\\n\\n[Network]\\nDHCP=ipv4\\n' > /etc/systemd/network/10-metalab-dhcp.network
systemctl enable systemd-networkd
printf 'nameserver 10.0.2.3\\n' > /etc/resolv.conf
printf '/dev/vda / ext4 defaults 0 1\\n' > /etc/fstab
echo metalab-vm > /etc/hostname
cat > /usr/local/sbin/metalab-sandbox-key <<'KEY'
#!/bin/sh
# Installs the per-sandbox SSH key passed on the kernel command line.
for word in $(cat /proc/cmdline); do
  case "$word" in
    metalab.key=*) key=$(echo "${{word#metalab.key=}}" | base64 -d) ;;
    metalab.hostname=*)
      name="${{word#metalab.hostname=}}"
      hostname "$name"
      echo "$name" > /etc/hostname
      grep -q " $name\\$" /etc/hosts || echo "127.0.1.1 $name" >> /etc/hosts ;;
  esac
done
[ -n "${{key:-}}" ] || exit 0
printf '%s\\n' "$key" > /home/{admin}/.ssh/authorized_keys
chown {admin}:{admin} /home/{admin}/.ssh/authorized_keys
chmod 0600 /home/{admin}/.ssh/authorized_keys
KEY
chmod 0755 /usr/local/sbin/metalab-sandbox-key
cat > /etc/systemd/system/metalab-sandbox-key.service <<'UNIT'
[Unit]
Description=Install the metalab sandbox SSH key
Before=ssh.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/metalab-sandbox-key
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable metalab-sandbox-key.service
"""


def vm_image(log: Path | None = None) -> tuple[Path, Path, Path]:
    """(disk image, kernel, initrd) of the cached VM image, built on first use."""
    tree = rootfs(log)
    script = _VM_CUSTOMISE.format(packages=" ".join(VM_PACKAGES), admin=ADMIN_USER)
    key = _key("vm", tree.name, VM_PACKAGES, script)
    base = cache_dir() / "vm"
    image_dir = base / key
    with _locked(base / f"{key}.lock"):
        disk, kernel, initrd = image_dir / "disk.img", image_dir / "vmlinuz", image_dir / "initrd.img"
        if (image_dir / ".metalab-complete").is_file():
            return disk, kernel, initrd
        work = base / f"{key}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        staging = work / "tree"
        work.mkdir(parents=True)
        log = log or base / f"{key}.log"
        log.write_text("")
        _run(["cp", "-a", "--reflink=auto", f"{tree}/.", str(staging)], log)
        (staging / "etc/resolv.conf").unlink(missing_ok=True)
        shutil.copy("/etc/resolv.conf", staging / "etc/resolv.conf")
        _chroot(staging, script, log)
        boot = staging / "boot"
        shutil.copy(sorted(boot.glob("vmlinuz-*"))[-1], work / "vmlinuz")
        shutil.copy(sorted(boot.glob("initrd.img-*"))[-1], work / "initrd.img")
        _run(["mkfs.ext4", "-q", "-F", "-L", "metalab-root", "-d", str(staging), str(work / "disk.img"), "6G"], log)
        shutil.rmtree(staging)
        (work / ".metalab-complete").write_text(key + "\n")
        work.rename(image_dir)
        _prune(base, keep=key)
        return disk, kernel, initrd
