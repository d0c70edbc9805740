"""`nspawn` sandboxes: a Debian root filesystem overlay booted with systemd-nspawn.

Each sandbox lives in a network namespace of its own, joined to the machine by
a veth pair (10.213.<index>.0/30). It has no route out: it reaches package
registries through a tinyproxy on the machine's end of the pair, passed to
the roles as ``lab_http_proxy`` -- the same variable a lab behind a proxy uses.
A second interface, ``lab0``, puts it on the lab network that sandboxes share (labnet.py, 10.214.0.<index>/24).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from metalab.labctl.sandbox import labnet, rootfs, ssh, state
from metalab.labctl.sandbox.errors import SandboxError

PROXY_PORT = 3128
MAX_INDEX = 250


BOOT_TIMEOUT = 120  # seconds for its SSH to answer (labctl sandbox up --boot-timeout)


def _addresses(index: int) -> tuple[str, str]:
    return f"10.213.{index}.1", f"10.213.{index}.2"


def _netns(name: str) -> str:
    return f"metalab-{name}"


def _veth(index: int) -> str:
    return f"mlsb{index}"


def _sh(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SandboxError(f"'{' '.join(argv)}' failed: {result.stderr.strip()}")


def _free_index() -> int:
    used = {r.get("index") for r in state.all_records()}
    existing = set(os.listdir("/sys/class/net"))
    for index in range(1, MAX_INDEX + 1):
        if index not in used and _veth(index) not in existing:
            return index
    raise SandboxError(f"all {MAX_INDEX} sandbox networks are in use: take some down")


def _network_up(name: str, index: int) -> str:
    host_ip, guest_ip = _addresses(index)
    netns, veth = _netns(name), _veth(index)
    _sh(["ip", "netns", "add", netns])
    _sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "host0", "netns", netns])
    _sh(["ip", "addr", "add", f"{host_ip}/30", "dev", veth])
    _sh(["ip", "link", "set", veth, "up"])
    _sh(["ip", "-n", netns, "addr", "add", f"{guest_ip}/30", "dev", "host0"])
    _sh(["ip", "-n", netns, "link", "set", "host0", "up"])
    _sh(["ip", "-n", netns, "link", "set", "lo", "up"])
    return labnet.attach(netns, index)


def _proxy_up(directory: Path, index: int) -> int:
    host_ip, guest_ip = _addresses(index)
    conf = directory / "tinyproxy.conf"
    conf.write_text(
        f"Port {PROXY_PORT}\nListen {host_ip}\nAllow {guest_ip}\nTimeout 600\nMaxClients 50\n"
        f'LogFile "{directory}/tinyproxy.log"\nLogLevel Notice\nDisableViaHeader Yes\n'
    )
    proc = subprocess.Popen(
        ["tinyproxy", "-d", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "tinyproxy.err", "w"),  # noqa: SIM115 - owned by the child
        start_new_session=True,
    )
    state.wait_exec(proc, "tinyproxy")
    return proc.pid


def _prepare_tree(directory: Path, name: str, index: int, key: Path) -> Path:
    lower = rootfs.rootfs(directory / "build.log")
    upper, work, merged = directory / "upper", directory / "work", directory / "root"
    for path in (upper, work, merged, directory / "containers"):
        path.mkdir(exist_ok=True)
    _sh(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)])
    host_ip, guest_ip = _addresses(index)
    (merged / "etc/hostname").write_text(f"{name}\n")
    (merged / "etc/hosts").write_text(f"127.0.0.1 localhost\n{guest_ip} {name}\n{host_ip} metalab-controller\n")
    resolv = merged / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    # No DNS: everything outbound goes through the proxy, which resolves names.
    resolv.write_text("# metalab sandbox: no resolver; use lab_http_proxy\n")
    home = merged / "home" / rootfs.ADMIN_USER / ".ssh"
    authorized = home / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    stat = home.stat()
    os.chown(authorized, stat.st_uid, stat.st_gid)
    authorized.chmod(0o600)
    return merged


def up(name: str, boot_timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
    directory = state.sandbox_dir(name)
    with state.locked():
        index = _free_index()
        directory.mkdir(parents=True)
        record: dict[str, Any] = {"name": name, "kind": "nspawn", "index": index, "created": int(time.time())}
        state.save(record)
    with state.removed_on_failure(name, directory / "console.log", down):
        key = ssh.keypair(directory)
        merged = _prepare_tree(directory, name, index, key)
        record["lab_address"] = _network_up(name, index)
        record["proxy_pid"] = _proxy_up(directory, index)
        host_ip, guest_ip = _addresses(index)
        argv = [
            "systemd-nspawn",
            "--register=no",
            "--keep-unit",
            "--quiet",
            "-D",
            str(merged),
            "-b",
            f"--machine=metalab-{name}",
            f"--network-namespace-path=/run/netns/{_netns(name)}",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            # Nested podman for runtimes: its storage on the machine's filesystem (overlay on overlay fails),
            # /dev/fuse and /dev/net/tun for rootless helpers and slirp4netns, all capabilities.
            f"--bind={directory / 'containers'}:/var/lib/containers",
            "--bind=/dev/fuse",
            "--bind=/dev/net/tun",
            "--capability=all",
            "--system-call-filter=@keyring bpf",
        ]
        state.launch(
            record,
            argv,
            directory / "console.log",
            "systemd-nspawn",
            ssh_timeout=boot_timeout,
            netns=_netns(name),
            ansible_host=guest_ip,
            ansible_port=22,
            ansible_user=rootfs.ADMIN_USER,
            ansible_ssh_private_key_file=str(key),
            lab_http_proxy=f"http://{host_ip}:{PROXY_PORT}",
            https_port=443,
        )
    return record


def down(name: str) -> None:
    directory = state.sandbox_dir(name)
    record = state.load(name) or {"name": name}
    # systemd-nspawn turns SIGTERM into a clean poweroff of the container; SIGKILL of the
    # container's init ends every process in its PID namespace.
    pid = record.get("pid")
    init = _container_init(pid)
    with contextlib.suppress(SandboxError):
        state.terminate(pid, "systemd-nspawn", timeout=30)
    if init and state.alive(init, "systemd"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, 9)
    state.terminate(record.get("proxy_pid"), "tinyproxy", timeout=5)
    merged = directory / "root"
    unmounted = subprocess.run(["umount", "-R", str(merged)], capture_output=True, check=False).returncode == 0
    if not unmounted and os.path.ismount(merged):
        subprocess.run(["umount", "-R", "-l", str(merged)], capture_output=True, check=False)
    index = record.get("index")
    labnet.detach(index)
    netns = _netns(name)
    if Path(f"/run/netns/{netns}").exists():
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
    if index and Path(f"/sys/class/net/{_veth(index)}").exists():
        subprocess.run(["ip", "link", "del", _veth(index)], capture_output=True, check=False)
    if directory.is_dir():
        subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], check=False)


def _container_init(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def is_up(record: dict[str, Any]) -> bool:
    return state.alive(record.get("pid"), "systemd-nspawn")
