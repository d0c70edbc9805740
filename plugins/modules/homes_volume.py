#!/usr/bin/python
# Copyright: metalab contributors
# Apache-2.0
from __future__ import annotations

DOCUMENTATION = r"""
---
module: homes_volume
short_description: The lab homes volume - choose the device, make the filesystem once, fstab, mount with quotas
description:
  - Chooses the homes device like M(metalab.lab.block_facts) (C(auto), a path, or C(none)), makes an XFS or ext4
    filesystem on it only when the device is empty, or when it was named and O(allow_format=true); a device that
    already carries the metalab filesystem (its label, or mounted at O(path)) is reused and never reformatted.
  - Writes one C(/etc/fstab) entry by UUID with user quota options and mounts it, so it survives a reboot.
  - Reports whether user quotas are enforceable (kernel support, quota tools, mount options) and fails when
    O(quota_required=true) and they are not, before anything is formatted where the cause is known early.
version_added: 0.1.0
author: metalab contributors
options:
  device:
    description: C(auto) (the one empty NVMe namespace), C(none) (homes on the root filesystem), or a device path.
    type: str
    default: auto
  path:
    description: Mount point, the lab homes root.
    type: path
    default: /srv/metalab/homes
  fstype:
    description: Filesystem made on a new volume. A reused volume keeps its filesystem.
    type: str
    choices: [xfs, ext4]
    default: xfs
  label:
    description: Filesystem label that marks the metalab volume (12 characters at most, the XFS limit).
    type: str
    default: metalab-home
  allow_format:
    description: Allow formatting a device named in O(device) that has a partition table, a signature or data.
    type: bool
    default: false
  quota_required:
    description: Fail when user quotas cannot be enforced; when false, only warn.
    type: bool
    default: true
  remount_ok:
    description:
      - Allow unmounting and mounting the volume again to add quota options (XFS cannot add them by remount).
        Disruptive for logged-in users, so off by default; a reboot does the same.
    type: bool
    default: false
  nosuid_nodev:
    description:
      - Mount the homes C(nosuid,nodev), so that set-uid bits and device nodes in tenants' files are never honoured.
        A mounted volume that lacks them is remounted in place (never unmounted, never reformatted). With
        O(device=none) the homes directory is bind-mounted onto itself with these options (in fstab too).
    type: bool
    default: true
  fstab:
    description: The fstab file to manage.
    type: path
    default: /etc/fstab
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Homes volume
  metalab.lab.homes_volume:
    device: auto
    path: /srv/metalab/homes
    fstype: xfs
  register: __storage_volume
"""

RETURN = r"""
device:
  description: The device holding the homes, or null for the root filesystem.
  returned: always
  type: str
action:
  description: format (made the filesystem), reuse or none.
  returned: always
  type: str
uuid:
  description: Filesystem UUID (null in check mode before the filesystem exists).
  returned: always
  type: str
fstype:
  description: Filesystem of the homes volume.
  returned: always
  type: str
homes_root:
  description: Where the homes live.
  returned: always
  type: str
size:
  description: Size in bytes of the homes device, or of the root filesystem when homes live there.
  returned: always
  type: int
quota:
  description: backend (xfs, ext4 or null), enforceable, causes (why not).
  returned: always
  type: dict
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.metalab.lab.plugins.module_utils.blockdev import (  # noqa: E402
    filesystem_size,
    gather_for_module,
    parse_blkid_values,
    selection_or_error,
)
from ansible_collections.metalab.lab.plugins.module_utils.quota import (  # noqa: E402
    QUOTA_MOUNT_OPTIONS,
    assess_quota,
    find_mount,
    fstab_line,
    mount_enforces_user_quota,
    parse_mounts,
    update_fstab,
)

MOUNTS_FILE = "/proc/self/mounts"
PROC_FILESYSTEMS = "/proc/filesystems"
KERNEL_QUOTA_DIR = "/proc/sys/fs/quota"
# Homes hold files tenants wrote: set-uid bits and device nodes there are never honoured.
SAFE_OPTIONS = ("nosuid", "nodev")
XFS_PROC_DIR = "/proc/fs/xfs"


def _read(path, default=""):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return default


def _kernel_and_tools(module, backend):
    # Filesystems built as modules (xfs on Debian's kernel) appear in /proc/filesystems only once loaded.
    modprobe = module.get_bin_path("modprobe")
    if backend and modprobe and backend not in _read(PROC_FILESYSTEMS):
        module.run_command([modprobe, "-q", backend])
    xfs_quota_kernel = None
    if os.path.isdir(XFS_PROC_DIR):  # only once the xfs module is loaded
        xfs_quota_kernel = os.path.exists(os.path.join(XFS_PROC_DIR, "xqm"))
    tools = {t: module.get_bin_path(t) is not None for t in ("xfs_quota", "setquota", "repquota")}
    return {
        "proc_filesystems": _read(PROC_FILESYSTEMS),
        "kernel_quota": os.path.isdir(KERNEL_QUOTA_DIR),
        "xfs_quota_kernel": xfs_quota_kernel,
        "tools": tools,
    }


class Volume:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.changed = False
        self.diff = {"before": "", "after": "", "before_header": "", "after_header": ""}
        self.warnings = []

    def run(self, argv):
        rc, out, err = self.module.run_command(argv, environ_update={"LC_ALL": "C"})
        if rc != 0:
            self.module.fail_json(msg=" ".join(argv) + " failed (rc " + str(rc) + "): " + (err or out).strip())
        return out

    def ensure_dir(self, path):
        if os.path.isdir(path):
            return
        self.changed = True
        if not self.module.check_mode:
            os.makedirs(path, mode=0o755)

    def finish(self, result, backend, mount):
        path = self.params["path"]
        assessment = assess_quota(backend, mount=mount, homes_root=path, **_kernel_and_tools(self.module, backend))
        result["quota"] = dict(assessment, backend=backend)
        result["changed"] = self.changed
        if self.module._diff and (self.diff["before"] != self.diff["after"]):
            result["diff"] = self.diff
        if not assessment["enforceable"]:
            msg = "lab user quotas cannot be enforced on " + path + ": " + "; ".join(assessment["causes"])
            if self.params["quota_required"]:
                self.module.fail_json(msg=msg + " (set lab_quota_required: false to continue without quotas)", **result)
            self.module.warn(msg)
        self.module.exit_json(**result)

    def apply(self):
        params = self.params
        path = params["path"].rstrip("/") or "/"
        facts = gather_for_module(self.module)
        sel = selection_or_error(facts, params["device"], params["allow_format"], path, params["label"])
        if sel["error"]:
            self.module.fail_json(msg=sel["error"], selection=sel)
        result = {
            "device": sel["device"],
            "action": sel["action"],
            "size": sel["size"],
            "uuid": None,
            "fstype": None,
            # Not "path": AnsibleModule would overwrite size and friends with the directory's stat().
            "homes_root": path,
            "reason": sel["reason"],
        }
        if sel["action"] == "none":
            self.ensure_dir(path)
            if params["nosuid_nodev"]:
                self.bind_homes(path)
            result["size"] = filesystem_size(path) if os.path.isdir(path) else 0
            self.finish(result, None, None)
            return

        device = sel["device"]
        disk = next((d for d in facts["disks"] if d["path"] == device), None) or {}
        fstype = params["fstype"]
        uuid = disk.get("uuid")
        if sel["action"] == "reuse":
            if not uuid or not disk.get("fstype"):
                values = parse_blkid_values(self.run(["blkid", "-o", "export", device]))
                uuid, found_type = values.get("UUID"), values.get("TYPE")
            else:
                found_type = disk["fstype"]
            if found_type and found_type != fstype:
                self.warnings.append(
                    device + " already carries the metalab " + found_type + " filesystem; keeping it (lab_homes_fstype "
                    "asks for " + fstype + ", metalab never reformats)"
                )
                fstype = found_type
        if fstype not in QUOTA_MOUNT_OPTIONS:
            self.module.fail_json(msg=device + " carries " + str(fstype) + ", which metalab cannot mount as homes")
        result["fstype"] = fstype

        if sel["action"] == "format":
            # Quota support the kernel lacks is known before formatting: fail before destroying anything.
            early = assess_quota(
                fstype,
                mount={"fstype": fstype, "options": QUOTA_MOUNT_OPTIONS[fstype].split(",")},
                homes_root=path,
                **_kernel_and_tools(self.module, fstype),
            )
            if early["causes"] and params["quota_required"]:
                self.module.fail_json(
                    msg="lab user quotas cannot be enforced, not formatting "
                    + device
                    + ": "
                    + "; ".join(early["causes"])
                    + " (set lab_quota_required: false to continue without quotas)",
                    quota=dict(early, backend=fstype),
                    **result,
                )
            self.changed = True
            self.diff["before_header"] = device
            self.diff["after_header"] = device
            self.diff["before"] = "no metalab filesystem\n"
            self.diff["after"] = "mkfs." + fstype + " label " + params["label"] + "\n"
            if not self.module.check_mode:
                if sel["wipe"]:
                    self.run(["wipefs", "--all", device])
                if fstype == "xfs":
                    self.run(["mkfs.xfs", "-L", params["label"], device])
                else:
                    # The quota feature keeps usage in hidden inodes: no quotacheck, usrquota turns on limits.
                    self.run(
                        ["mkfs.ext4", "-q", "-L", params["label"], "-O", "quota", "-E", "quotatype=usrquota", device]
                    )
                uuid = parse_blkid_values(self.run(["blkid", "-o", "export", device])).get("UUID")
                if not uuid:
                    self.module.fail_json(msg="made a filesystem on " + device + " but blkid reports no UUID", **result)
            result["action"] = "format"
        result["uuid"] = uuid

        safe = ",".join(SAFE_OPTIONS) + "," if params["nosuid_nodev"] else ""
        options = "defaults," + safe + QUOTA_MOUNT_OPTIONS[fstype]
        spec = "UUID=" + uuid if uuid else "UUID=<made by mkfs>"
        fstab_path = params["fstab"]
        before = _read(fstab_path)
        after, fstab_changed = update_fstab(before, path, fstab_line(spec, path, fstype, options))
        if fstab_changed:
            self.changed = True
            if not self.diff["before_header"]:
                self.diff.update(before=before, after=after, before_header=fstab_path, after_header=fstab_path)
            else:
                self.diff["before"] += before
                self.diff["after"] += after
            if not self.module.check_mode:
                self.write_fstab(fstab_path, after)

        mount = find_mount(parse_mounts(_read(MOUNTS_FILE)), path)
        if mount is not None and not self.same_device(mount["source"], device, uuid):
            self.module.fail_json(
                msg=path
                + " is mounted from "
                + mount["source"]
                + ", not from the homes device "
                + device
                + "; unmount it or name that device in lab_homes_device",
                **result,
            )
        planned = {"fstype": fstype, "options": ["rw"] + list(SAFE_OPTIONS) + QUOTA_MOUNT_OPTIONS[fstype].split(",")}
        if mount is None:
            self.ensure_dir(path)
            self.changed = True
            if not self.module.check_mode:
                self.run(["mount", path])
            mount = planned
        elif not self.has_quota_options(mount, fstype) and params["remount_ok"]:
            self.changed = True
            if not self.module.check_mode:
                self.run(["umount", path])
                self.run(["mount", path])
            mount = planned
        elif params["nosuid_nodev"] and (self.has_quota_options(mount, fstype) or not params["quota_required"]):
            # (a volume that fails for its quota options below is left as it is)
            self.ensure_safe_options(mount, path, bind=False)
        if not self.module.check_mode and self.changed:
            mount = find_mount(parse_mounts(_read(MOUNTS_FILE)), path)
        for warning in self.warnings:
            self.module.warn(warning)
        self.finish(result, fstype, mount)

    def ensure_safe_options(self, mount, path, bind):
        """Remount in place with nosuid,nodev when the mount lacks one of them (per-mount flags: no unmount)."""
        if all(option in mount["options"] for option in SAFE_OPTIONS):
            return
        self.changed = True
        self.diff["before"] += path + " mounted " + ",".join(mount["options"]) + "\n"
        self.diff["after"] += path + " mounted with " + ",".join(SAFE_OPTIONS) + "\n"
        if not self.module.check_mode:
            self.run(["mount", "-o", "remount," + ("bind," if bind else "") + ",".join(SAFE_OPTIONS), path])

    def bind_homes(self, path):
        """Homes on the root filesystem: bind-mount the directory onto itself with nosuid,nodev (fstab too)."""
        fstab_path = self.params["fstab"]
        before = _read(fstab_path)
        after, fstab_changed = update_fstab(
            before, path, fstab_line(path, path, "none", "bind," + ",".join(SAFE_OPTIONS))
        )
        if fstab_changed:
            self.changed = True
            self.diff.update(before=before, after=after, before_header=fstab_path, after_header=fstab_path)
            if not self.module.check_mode:
                self.write_fstab(fstab_path, after)
        mount = find_mount(parse_mounts(_read(MOUNTS_FILE)), path)
        if mount is None:
            self.changed = True
            if self.module.check_mode:
                return
            self.run(["mount", path])
            mount = find_mount(parse_mounts(_read(MOUNTS_FILE)), path)
            if mount is None:
                self.module.fail_json(msg="mount " + path + " (a bind mount from " + fstab_path + ") mounted nothing")
        self.ensure_safe_options(mount, path, bind=True)

    @staticmethod
    def has_quota_options(mount, fstype):
        return mount_enforces_user_quota(fstype, mount["options"])

    @staticmethod
    def same_device(source, device, uuid):
        if uuid and source in ("UUID=" + uuid, "/dev/disk/by-uuid/" + uuid):
            return True
        return os.path.realpath(source) == os.path.realpath(device)

    def write_fstab(self, path, text):
        tmp = path + ".metalab.tmp"
        mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        self.module.atomic_move(tmp, path)


def main():
    module = AnsibleModule(
        argument_spec={
            "device": {"type": "str", "default": "auto"},
            "path": {"type": "path", "default": "/srv/metalab/homes"},
            "fstype": {"type": "str", "choices": ["xfs", "ext4"], "default": "xfs"},
            "label": {"type": "str", "default": "metalab-home"},
            "allow_format": {"type": "bool", "default": False},
            "quota_required": {"type": "bool", "default": True},
            "remount_ok": {"type": "bool", "default": False},
            "nosuid_nodev": {"type": "bool", "default": True},
            "fstab": {"type": "path", "default": "/etc/fstab"},
        },
        supports_check_mode=True,
    )
    if len(module.params["label"]) > 12:
        module.fail_json(msg="label " + module.params["label"] + " is longer than 12 characters (the XFS limit)")
    Volume(module).apply()


if __name__ == "__main__":
    main()
