# Copyright: metalab contributors
# Apache-2.0
"""Disk quota helpers: sizes, quota reports, mount options, fstab, enforceability (pure, stdlib only)."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.metalab.lab.plugins.module_utils.rules import (  # noqa: F401 - sizes are rules
    SizeError,
    human_size,
    parse_size,
)

# Mount options that turn on enforced user quotas, per filesystem.
QUOTA_MOUNT_OPTIONS = {"xfs": "uquota,pquota", "ext4": "usrquota"}
# What the kernel shows in /proc/self/mounts once user quotas are enforced.
_ENFORCED = {"xfs": ("usrquota", "uquota", "quota"), "ext4": ("usrquota", "quota", "usrjquota")}


def size_to_kib(size: int) -> int:
    """Bytes -> quota blocks (1 KiB), rounded up so a quota is never smaller than asked."""
    return (size + 1023) // 1024


def parse_xfs_quota_report(text: str) -> Dict[int, Dict[str, int]]:
    """Parse ``xfs_quota -x -c 'report -u -b -n -N' MOUNT``: uid -> {used_kib, soft_kib, hard_kib}.

    With -n ids are printed as ``#20000``; -N drops the header; lines look like
    ``#20000     4   15728640   15728640     00 [--------]``.
    """
    result: Dict[int, Dict[str, int]] = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].startswith("#"):
            continue
        try:
            uid = int(fields[0][1:])
            used, soft, hard = int(fields[1]), int(fields[2]), int(fields[3])
        except ValueError:
            continue
        result[uid] = {"used_kib": used, "soft_kib": soft, "hard_kib": hard}
    return result


def parse_repquota(text: str) -> Dict[int, Dict[str, int]]:
    """Parse ``repquota -u -n MOUNT`` (quota-tools): uid -> {used_kib, soft_kib, hard_kib}.

    Lines look like ``#20000    --       4  15728640  15728640              1     0     0``; a grace
    column appears after the block hard limit only when the soft limit is exceeded, so only the first
    three numbers after the flags are read.
    """
    result: Dict[int, Dict[str, int]] = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0].startswith("#"):
            continue
        try:
            uid = int(fields[0][1:])
            used, soft, hard = int(fields[2]), int(fields[3]), int(fields[4])
        except ValueError:
            continue
        result[uid] = {"used_kib": used, "soft_kib": soft, "hard_kib": hard}
    return result


def parse_mounts(text: str) -> List[Dict[str, Any]]:
    """Parse /proc/self/mounts (or /etc/mtab) into [{source, target, fstype, options}]."""
    mounts = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mounts.append(
            {
                "source": _unescape(fields[0]),
                "target": _unescape(fields[1]),
                "fstype": fields[2],
                "options": fields[3].split(","),
            }
        )
    return mounts


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def find_mount(mounts: List[Dict[str, Any]], target: str) -> Optional[Dict[str, Any]]:
    """The mount at ``target`` (the last one wins, as the kernel stacks them)."""
    target = target.rstrip("/") or "/"
    found = None
    for mount in mounts:
        if mount["target"] == target:
            found = mount
    return found


def mount_enforces_user_quota(fstype: str, options: List[str]) -> bool:
    opts = set(options)
    if fstype == "xfs" and ("uqnoenforce" in opts or "qnoenforce" in opts):
        return False
    return bool(opts & set(_ENFORCED.get(fstype, ())))


def fstab_line(spec: str, target: str, fstype: str, options: str) -> str:
    passno = "2" if fstype.startswith("ext") else "0"
    return " ".join([spec, target, fstype, options, "0", passno])


def update_fstab(text: str, target: str, line: str) -> Tuple[str, bool]:
    """Ensure exactly one fstab entry for ``target``, equal to ``line``; other lines untouched.

    Returns (new_text, changed). Comments and unrelated entries are kept byte for byte.
    """
    target = target.rstrip("/") or "/"
    out: List[str] = []
    placed = False
    changed = False
    for raw in (text or "").splitlines():
        fields = raw.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 2 and _unescape(fields[1]).rstrip("/") == target:
            if placed:
                changed = True  # a duplicate entry for the same mount point would shadow ours
                continue
            placed = True
            if fields != line.split():
                changed = True
                out.append(line)
            else:
                out.append(raw)
            continue
        out.append(raw)
    if not placed:
        out.append(line)
        changed = True
    return "\n".join(out) + "\n", changed


def assess_quota(
    backend: Optional[str],
    *,
    proc_filesystems: str = "",
    kernel_quota: Optional[bool] = None,
    xfs_quota_kernel: Optional[bool] = None,
    tools: Optional[Dict[str, bool]] = None,
    mount: Optional[Dict[str, Any]] = None,
    homes_root: str = "/srv/metalab/homes",
) -> Dict[str, Any]:
    """Can user quotas be enforced on the homes?  Returns {"enforceable": bool, "causes": [str]}.

    ``backend``: xfs, ext4 or None (homes on the root filesystem); ``kernel_quota``: /proc/sys/fs/quota
    exists (CONFIG_QUOTA); ``xfs_quota_kernel``: /proc/fs/xfs/xqm exists (CONFIG_XFS_QUOTA; None when the
    xfs module is not loaded yet); ``tools``: binary -> found; ``mount``: the entry at the homes root, or
    None when it is not mounted.
    """
    causes: List[str] = []
    tools = tools or {}
    if backend is None:
        return {
            "enforceable": False,
            "causes": ["homes are on the root filesystem (lab_homes_device: none), so no per-user quota is applied"],
        }
    known = {line.split()[-1] for line in proc_filesystems.splitlines() if line.split()}
    if proc_filesystems and backend not in known and mount is not None:
        causes.append("the kernel does not list " + backend + " in /proc/filesystems")
    if backend == "xfs":
        if xfs_quota_kernel is False:
            causes.append("kernel without XFS quota support (no /proc/fs/xfs/xqm; CONFIG_XFS_QUOTA is off)")
        if not tools.get("xfs_quota", False):
            causes.append("xfs_quota is not installed (package xfsprogs)")
    else:
        if kernel_quota is False:
            causes.append("kernel without disk quota support (no /proc/sys/fs/quota; CONFIG_QUOTA is off)")
        for tool in ("setquota", "repquota"):
            if not tools.get(tool, False):
                causes.append(tool + " is not installed (package quota)")
    if mount is None:
        causes.append("the homes volume is not mounted at " + homes_root)
    elif mount.get("fstype") != backend:
        causes.append(homes_root + " is mounted as " + str(mount.get("fstype")) + ", expected " + backend)
    elif not mount_enforces_user_quota(backend, mount.get("options") or []):
        causes.append(
            homes_root
            + " is mounted without quota options ("
            + ",".join(mount.get("options") or [])
            + "; needs "
            + QUOTA_MOUNT_OPTIONS[backend]
            + ")"
        )
    return {"enforceable": not causes, "causes": causes}
