# Copyright: metalab contributors
# Apache-2.0
"""SELinux planning for the roles, pure: what `semanage fcontext`, `getsebool` and `semodule -l` say, and the argv
that brings the host to what metalab needs. Only hosts with SELinux enabled (Amazon Linux 2023) ever run it.

What the runtimes need (docs/selinux.md): their bind mounts (the homes, the socket directory) labelled
container_file_t by a local file context rule and restorecon, not by podman's :Z, which would give each home the
private categories of one container and relabel the whole home at every start.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional

# The characters that mean something in a file context specification (a regular expression).
_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")
_BOOLEAN = re.compile(r"^(\S+)\s+-->\s+(on|off)\s*$")


def fcontext_spec(path: str) -> str:
    """/srv/metalab/homes -> '/srv/metalab/homes(/.*)?': the directory and everything under it."""
    clean = "/" + path.strip().strip("/")
    if clean == "/":
        raise ValueError("refusing a file context rule for / (it would relabel the whole host)")
    return _SPECIAL.sub(r"\\\1", clean) + "(/.*)?"


def local_fcontexts(listing: str) -> dict:
    """`semanage fcontext -l -C` -> {spec: type} of the local rules for all files."""
    rules = {}
    for line in listing.splitlines():
        parts = line.split()
        # spec, "all files", context (user:role:type:level)
        if len(parts) >= 4 and parts[1:3] == ["all", "files"] and parts[3].count(":") >= 3:
            rules[parts[0]] = parts[3].split(":")[2]
    return rules


def fcontext_argv(listing: str, spec: str, setype: str) -> Optional[List[str]]:
    """The semanage command that makes spec's local rule setype, or None when it already is."""
    current = local_fcontexts(listing).get(spec)
    if current == setype:
        return None
    return ["semanage", "fcontext", "-m" if current else "-a", "-t", setype, spec]


def booleans_off(getsebool: str, names: Iterable[str]) -> List[str]:
    """`getsebool -a` (or of the names) -> the names that are off; a name the policy lacks is an error."""
    state = {}
    for line in getsebool.splitlines():
        found = _BOOLEAN.match(line.strip())
        if found:
            state[found.group(1)] = found.group(2)
    wanted = list(names)
    unknown = [name for name in wanted if name not in state]
    if unknown:
        raise ValueError("SELinux boolean(s) not in this host's policy: " + ", ".join(unknown))
    return [name for name in wanted if state[name] == "off"]


def module_loaded(semodule_list: str, name: str) -> bool:
    """`semodule -l` (one module a line, with or without a version) -> whether name is loaded."""
    return any(line.split()[:1] == [name] for line in semodule_list.splitlines())
