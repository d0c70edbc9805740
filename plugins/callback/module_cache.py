# Copyright: metalab contributors
# Apache-2.0
"""Keep Ansible's built module payloads between runs (docs/performance.md, issue 20)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import tempfile
from typing import Iterable, List, Optional

from ansible import constants as C
from ansible.plugins.callback import CallbackBase
from ansible.release import __version__ as ansible_version

DOCUMENTATION = r"""
name: module_cache
type: aggregate
short_description: Reuse built module payloads (AnsiballZ) across ansible-playbook runs
description:
  - >-
    Before a module runs on a host for the first time in a run, the controller builds its payload: it parses the
    module and every module_utils file it imports, recursively, and zips them. ansible-core keeps the result only
    for the run (in its temporary directory), so every run builds every module it uses again, about 0.3 s of
    controller CPU each.
  - >-
    This callback keeps the payloads of modules from ansible-core and from collections in a private directory and
    hands them to the next run. They are kept under a signature of ansible-core's version, the controller's Python
    and the size and modification time of every file that can end up in a payload (ansible-core's package, the
    modules and module_utils of every collection on the collections path, configured module_utils paths): changing
    any of those files starts a new signature, so a payload is never older than the code it was built from.
  - >-
    Modules from a role's C(library) or from configured module paths (ansible-core names them C(ansible.legacy.*),
    whatever their file) are not kept.
  - >-
    The directory must belong to the user running Ansible and be writable by no one else (a payload runs on every
    host, as root with become); otherwise the callback warns and keeps nothing.
options:
  dir:
    description: Where the payloads are kept (one folder per signature).
    type: path
    default: ~/.ansible/metalab/module_cache
    env:
      - name: METALAB_MODULE_CACHE_DIR
    ini:
      - section: callback_metalab_module_cache
        key: dir
  keep:
    description: How many signatures (folders) to keep; the least recently used ones beyond this are removed.
    type: int
    default: 4
    env:
      - name: METALAB_MODULE_CACHE_KEEP
    ini:
      - section: callback_metalab_module_cache
        key: keep
"""

# Payload names that are safe to keep: the module's fully qualified name says where its file is.
KEPT_PREFIXES = ("ansible.modules.", "ansible_collections.")
# ansible-core's own naming inside its cache folder (module_common._find_module_utils).
SUBDIR = "ansiballz_cache"


def _tree(root: str) -> List[str]:
    """'relative path size mtime_ns' for every file under root (following a root that is a link), sorted."""
    lines: List[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            lines.append(f"{os.path.relpath(path, root)} {st.st_size} {st.st_mtime_ns}")
    return lines


def source_roots(collection_paths: Iterable[str], module_utils_paths: Iterable[str]) -> List[str]:
    """Every directory whose files can become part of a kept payload."""
    import ansible

    roots = [os.path.dirname(ansible.__file__)]
    for base in collection_paths:
        top = os.path.join(base, "ansible_collections")
        if not os.path.isdir(top):
            continue
        for namespace in sorted(os.listdir(top)):
            ns_dir = os.path.join(top, namespace)
            if not os.path.isdir(ns_dir):
                continue
            for name in sorted(os.listdir(ns_dir)):
                for sub in ("modules", "module_utils"):
                    path = os.path.join(ns_dir, name, "plugins", sub)
                    if os.path.isdir(path):
                        roots.append(path)
    roots.extend(p for p in module_utils_paths if os.path.isdir(p))
    return roots


def signature(roots: Iterable[str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"ansible-core {ansible_version}\npython {sys.version}\n".encode())
    for root in roots:
        digest.update(f"root {os.path.realpath(root)}\n".encode())
        for line in _tree(root):
            digest.update(line.encode() + b"\n")
    return digest.hexdigest()[:32]


def private_dir(path: str) -> Optional[str]:
    """Create path (0700) if missing; the reason it cannot be trusted, or None when it can."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory (a link?)"
    if st.st_uid != os.geteuid():
        return f"{path} belongs to uid {st.st_uid}, not to the user running Ansible ({os.geteuid()})"
    if st.st_mode & 0o022:
        return f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def kept(name: str) -> bool:
    return name.startswith(KEPT_PREFIXES) and not name.endswith((".lock", "-part"))


def copy_entries(src: str, dst: str) -> int:
    """Copy the kept payload files from src that dst lacks, each written aside and renamed into place. Their count."""
    copied = 0
    try:
        names = os.listdir(src)
    except OSError:
        return 0
    for name in names:
        target = os.path.join(dst, name)
        if not kept(name) or os.path.exists(target):
            continue
        source = os.path.join(src, name)
        if not os.path.isfile(source) or os.path.islink(source):
            continue
        fd, part = tempfile.mkstemp(prefix=".part-", dir=dst)
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as inp:
                shutil.copyfileobj(inp, out)
            os.replace(part, target)
            copied += 1
        except OSError:
            if os.path.exists(part):
                os.unlink(part)
    return copied


def prune(base: str, current: str, keep: int) -> None:
    """Remove the least recently used signature folders beyond keep (the current one always stays)."""
    folders = []
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if name != current and os.path.isdir(path) and not os.path.islink(path):
            folders.append((os.stat(path).st_mtime, path))
    folders.sort(reverse=True)
    for _, path in folders[max(keep - 1, 0) :]:
        shutil.rmtree(path, ignore_errors=True)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "metalab.lab.module_cache"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._kept: Optional[str] = None
        self._run: Optional[str] = None

    def v2_playbook_on_start(self, playbook):
        try:
            self._start()
        except Exception as exc:  # a cache must never stop a run
            self._display.warning(f"metalab.lab.module_cache: not used in this run: {exc}")
            self._kept = None

    def _start(self) -> None:
        from ansible.utils.collection_loader import AnsibleCollectionConfig

        base = os.path.expanduser(self.get_option("dir"))
        problem = private_dir(base)
        if problem:
            self._display.warning(f"metalab.lab.module_cache: not used: {problem}")
            return
        roots = source_roots(
            AnsibleCollectionConfig.collection_paths or [], getattr(C, "DEFAULT_MODULE_UTILS_PATH", None) or []
        )
        current = signature(roots)
        kept_dir = os.path.join(base, current)
        os.makedirs(kept_dir, mode=0o700, exist_ok=True)
        os.utime(kept_dir)  # most recently used
        run_dir = os.path.join(C.DEFAULT_LOCAL_TMP, SUBDIR)
        os.makedirs(run_dir, exist_ok=True)
        loaded = copy_entries(kept_dir, run_dir)
        self._display.vvv(f"metalab.lab.module_cache: {loaded} payloads from {kept_dir}")
        self._kept, self._run = kept_dir, run_dir
        prune(base, current, int(self.get_option("keep")))

    def v2_playbook_on_stats(self, stats):
        if not (self._kept and self._run):
            return
        try:
            saved = copy_entries(self._run, self._kept)
            self._display.vvv(f"metalab.lab.module_cache: {saved} new payloads kept in {self._kept}")
        except Exception as exc:
            self._display.warning(f"metalab.lab.module_cache: payloads not kept: {exc}")
