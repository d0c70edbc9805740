"""Home usage of every lab user: the usage file (/var/lib/metalab/usage.json) the portal, the metrics and labctl read.

Written by ``metalab-guard home-usage --write`` (a systemd timer, every 5 minutes, idle I/O priority). The numbers come
from the quota subsystem where the homes volume enforces quotas (``xfs_quota`` or ``repquota``: what the kernel
charges her uid, cheap and exact), otherwise from a walk of her home: lstat only, st_blocks * 512 (what the disk
holds, so sparse files count their data, not their size), hard links counted once, symlinks never followed, other
filesystems (mounts inside the home) not entered, and at most ``walk_seconds`` per user (a partial walk says so).

The file: {"<user>": {"used_bytes", "limit_bytes" (0 = no quota), "measured_at" (ISO-8601 UTC), "source"
("quota" | "walk"), "partial" (only when a walk ran out of time or could not read a directory)}}, root 0600.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from metalab.host.guard.files import atomic_write
from metalab.host.guard.policy import format_iso

LOG = logging.getLogger("metalab.guard.usage")

Runner = Callable[[Sequence[str]], str]


@dataclass
class Walk:
    used_bytes: int = 0
    files: int = 0
    partial: bool = False


def walk(root: str, budget_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> Walk:
    """Bytes on disk under root (root included): one filesystem, no symlink followed, each inode once."""
    result = Walk()
    deadline = clock() + budget_seconds
    try:
        top = os.lstat(root)
    except FileNotFoundError:
        return result
    if not stat.S_ISDIR(top.st_mode):
        result.used_bytes = top.st_blocks * 512
        return result
    device = top.st_dev
    seen: Set[Tuple[int, int]] = set()
    result.used_bytes = top.st_blocks * 512
    stack: List[str] = [root]
    while stack:
        if clock() > deadline:
            result.partial = True
            break
        path = stack.pop()
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:  # removed meanwhile
                        continue
                    if st.st_dev != device:  # a mount point inside the home: another filesystem
                        continue
                    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                        key = (st.st_dev, st.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    result.used_bytes += st.st_blocks * 512
                    result.files += 1
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        except OSError as exc:  # removed meanwhile, or not readable (root reads all; a FUSE mount may not let it)
            LOG.warning("home usage: cannot read %s: %s", path, exc)
            result.partial = True
    return result


def parse_xfs_quota_report(text: str) -> Dict[int, int]:
    """``xfs_quota -x -c 'report -u -b -n -N' MOUNT`` -> {uid: used KiB}.

    Same format as plugins/module_utils/quota.py reads (that one runs in Ansible modules, this one on the host with
    the standard library only): ``#20000     4   15728640   15728640     00 [--------]``.
    """
    result: Dict[int, int] = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].startswith("#"):
            continue
        try:
            result[int(fields[0][1:])] = int(fields[1])
        except ValueError:
            continue
    return result


def parse_repquota(text: str) -> Dict[int, int]:
    """``repquota -u -n MOUNT`` -> {uid: used KiB}: ``#20000    --       4  15728640  15728640  ...``."""
    result: Dict[int, int] = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0].startswith("#"):
            continue
        try:
            result[int(fields[0][1:])] = int(fields[2])
        except ValueError:
            continue
    return result


def _run(argv: Sequence[str]) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=120).stdout


def quota_report(backend: str, mount: str, runner: Runner = _run) -> Dict[int, int]:
    """{uid: used bytes} from the quota subsystem of the homes volume (backend xfs or ext4)."""
    if backend == "xfs":
        used = parse_xfs_quota_report(runner(["xfs_quota", "-x", "-c", "report -u -b -n -N", mount]))
    elif backend == "ext4":
        used = parse_repquota(runner(["repquota", "-u", "-n", mount]))
    else:
        raise ValueError(f"quota backend {backend!r}: expected xfs or ext4")
    return {uid: kib * 1024 for uid, kib in used.items()}


def detect_backend(mount: str, mounts_text: str) -> str:
    """xfs or ext4 when the filesystem holding ``mount`` accounts usage per user (mounted with user quotas), else none.

    ``mounts_text`` is /proc/self/mounts; the longest mount point that contains ``mount`` holds it.
    """
    best, fstype, options = "", "", []
    target = os.path.normpath(mount)
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype, options = point, fields[2], fields[3].split(",")
    if fstype == "xfs" and {"usrquota", "uquota", "uqnoenforce"} & set(options):
        return "xfs"
    if fstype in ("ext4", "ext3") and {"usrquota", "quota", "usrjquota"} & {o.split("=")[0] for o in options}:
        return "ext4"
    return "none"


def _mounts() -> str:
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        return fh.read()


def measure(
    config: Any,
    now: float,
    runner: Runner = _run,
    clock: Callable[[], float] = time.monotonic,
    mounts: Callable[[], str] = _mounts,
) -> Dict[str, Dict[str, Any]]:
    """The usage file's content for every lab user of the guard config."""
    usage = config.usage
    report: Optional[Dict[int, int]] = None
    backend = usage.quota_backend
    if backend == "auto":
        try:
            backend = detect_backend(usage.homes_mount, mounts())
        except OSError as exc:
            LOG.warning("home usage: cannot read the mount table (%s); walking the homes", exc)
            backend = "none"
    if backend in ("xfs", "ext4"):
        try:
            report = quota_report(backend, usage.homes_mount, runner)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            LOG.warning("home usage: the quota report failed (%s); walking the homes instead", exc)
    out: Dict[str, Dict[str, Any]] = {}
    started, files = clock(), 0
    for name, user in sorted(config.users.items()):
        entry: Dict[str, Any] = {"limit_bytes": int(user.quota_bytes or 0)}
        if report is not None:
            entry.update(used_bytes=int(report.get(user.uid, 0)), source="quota")
        else:
            result = walk(user.home, usage.walk_seconds, clock)
            entry.update(used_bytes=result.used_bytes, source="walk")
            files += result.files
            if result.partial:
                entry["partial"] = True
        entry["measured_at"] = format_iso(now)
        out[name] = entry
    how = f"quota report of {usage.homes_mount}" if report is not None else f"walk of {files} files"
    LOG.info("home usage of %d users: %s in %.2f s", len(out), how, clock() - started)
    return out


def write(path: str, data: Mapping[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o600)


def load(path: str) -> Dict[str, Dict[str, Any]]:
    """The usage file; {} when it does not exist yet."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object keyed by user")
    return data
