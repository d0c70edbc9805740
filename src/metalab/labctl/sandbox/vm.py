"""`vm` sandboxes: the cached Debian image with Debian's kernel under qemu.

Used for what needs a real kernel: NVMe namespaces (qemu's `nvme` device),
filesystems with quotas, fstab and reboots. Software emulation unless KVM
works here; SSH and HTTPS are forwarded to loopback ports.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

from metalab.labctl.sandbox import rootfs, ssh, state
from metalab.labctl.sandbox.errors import SandboxError

MEMORY_MB = 2048


BOOT_TIMEOUT = 480  # seconds for its SSH to answer (labctl sandbox up --boot-timeout); no KVM: 30-300 s


def up(name: str, nvme_sizes: list[int], boot_timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
    directory = state.sandbox_dir(name)
    with state.locked():
        directory.mkdir(parents=True)
        port, https_port = ssh.free_port(), ssh.free_port()
        record: dict[str, Any] = {"name": name, "kind": "vm", "created": int(time.time())}
        state.save(record)
    with state.removed_on_failure(name, directory / "qemu.log", down):
        disk, kernel, initrd = rootfs.vm_image(directory / "build.log")
        key = ssh.keypair(directory)
        overlay = directory / "root.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(disk), str(overlay)], check=True
        )
        pubkey = base64.b64encode(Path(f"{key}.pub").read_bytes().strip()).decode()
        argv = [
            "qemu-system-x86_64",
            "-name", f"metalab-{name}",
            "-machine", "q35",
            # Software emulation: /dev/kvm exists on these machines but guests hang under it.
            "-accel", "tcg,thread=multi",
            "-smp", "2",
            "-m", str(MEMORY_MB),
            "-display", "none",
            "-monitor", "none",
            "-serial", f"file:{directory / 'console.log'}",
            "-kernel", str(kernel),
            "-initrd", str(initrd),
            "-append", f"root=/dev/vda rw console=ttyS0 quiet metalab.key={pubkey} metalab.hostname={name}",
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22,hostfwd=tcp:127.0.0.1:{https_port}-:443",
            "-device", "virtio-net-pci,netdev=n0",
        ]  # fmt: skip
        nvme = []
        for number, size in enumerate(nvme_sizes):
            image = directory / f"nvme{number}.img"
            with open(image, "wb") as handle:
                handle.truncate(size)
            serial = f"ML{name[:12]}{number}".upper()
            argv += ["-drive", f"file={image},if=none,id=nv{number},format=raw",
                     "-device", f"nvme,serial={serial},drive=nv{number}"]  # fmt: skip
            nvme.append({"serial": serial, "size": size, "image": str(image)})
        state.launch(
            record,
            argv,
            directory / "qemu.log",
            "qemu-system-x86_64",
            ssh_timeout=boot_timeout,
            ansible_host="127.0.0.1",
            ansible_port=port,
            ansible_user=rootfs.ADMIN_USER,
            ansible_ssh_private_key_file=str(key),
            https_port=https_port,
            nvme=nvme,
        )
    return record


def down(name: str) -> None:
    directory = state.sandbox_dir(name)
    record = state.load(name) or {}
    with contextlib.suppress(SandboxError):
        state.terminate(record.get("pid"), "qemu-system-x86_64", timeout=10)
    if directory.is_dir():
        subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], check=False)


def is_up(record: dict[str, Any]) -> bool:
    return state.alive(record.get("pid"), "qemu-system-x86_64")
