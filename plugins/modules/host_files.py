#!/usr/bin/python
# Copyright: metalab contributors
# Apache-2.0
from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_files
short_description: Reconcile a set of small configuration files, directories and lines in one call
description:
  - The batch counterpart of M(ansible.builtin.copy), M(ansible.builtin.file) and M(ansible.builtin.lineinfile)
    for the files a role owns. One module call (one SSH round trip) checks them all, so a rerun on a converged
    host costs one call instead of two per file.
  - Every entry is validated first; a bad entry fails the task naming it, before anything is changed.
  - Entries are applied in order (a directory before the files in it). Files are written atomically (a
    temporary file in the same directory, then a rename); owner, group and mode are set afterwards.
  - Supports check mode and diff mode.
version_added: 0.2.0
author: metalab contributors
options:
  files:
    description:
      - The entries. Each is a dict with C(path) (absolute) and C(state).
      - C(state=file) (the default) writes C(content) (text) with C(owner), C(group) (default C(root)) and
        C(mode) (default C(0644)). With C(validate) (a command with C(%s), like M(ansible.builtin.template)'s),
        new content is written to a temporary file beside C(path), the command runs on it, and the file is
        installed only when the command succeeds; otherwise the task fails naming the path and C(path) keeps its
        old content. The command is not run when the content is unchanged, nor in check mode.
      - C(state=directory) creates the directory (parents too) with C(owner), C(group) and C(mode) (default
        C(0755)).
      - C(state=absent) removes a file or a symbolic link; a directory is never removed.
      - C(state=line) makes sure C(line) is in the existing file C(path), replacing the last line matching
        C(regexp) when there is one, else inserting it after the last line matching C(insertafter) or before the
        first line matching C(insertbefore) (C(BOF) for the top, the end by default), like
        M(ansible.builtin.lineinfile).
      - C(only_if=false) drops the entry (a conditional entry in a static list); its other keys are not checked.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Hardening files
  metalab.lab.host_files:
    files:
      - path: /etc/systemd/coredump.conf.d
        state: directory
      - path: /etc/systemd/coredump.conf.d/90-metalab.conf
        content: "{{ lookup('ansible.builtin.template', 'coredump.conf.j2') }}"
      - path: /etc/pam.d/cron
        state: line
        line: account    required   pam_access.so
        regexp: ^account\s+required\s+pam_access.so
        insertafter: ^@include common-account
        only_if: "{{ ansible_facts['os_family'] == 'Debian' }}"
"""

RETURN = r"""
changed_paths:
  description: Paths that were changed (or would be, in check mode), in entry order.
  returned: always
  type: list
  elements: str
"""

import os  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

STATES = ("file", "directory", "absent", "line")
KEYS = {
    "file": {"content", "owner", "group", "mode", "validate"},
    "directory": {"owner", "group", "mode"},
    "absent": set(),
    "line": {"line", "regexp", "insertafter", "insertbefore"},
}
COMMON = {"path", "state", "only_if"}


class EntryError(ValueError):
    pass


def _bool(value, where):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", ""):
        return False
    raise EntryError(f"{where}: only_if must be true or false, not {value!r}")


def validate(entries):
    """Normalise the entries; raise EntryError naming the first bad one. Drops entries with only_if false."""
    if not isinstance(entries, list):
        raise EntryError("files must be a list")
    out = []
    seen = {}
    for index, entry in enumerate(entries):
        where = f"files[{index}]"
        if not isinstance(entry, dict):
            raise EntryError(f"{where}: each entry must be a dict with path and state, not {entry!r}")
        path = entry.get("path")
        if isinstance(path, str):
            where = f"{where} ({path})"
        # A dropped entry's path is not checked: it may be empty when the condition that drops it says why.
        if not _bool(entry.get("only_if", True), where):
            continue
        if not isinstance(path, str) or not path.startswith("/") or path.rstrip("/") == "":
            raise EntryError(f"files[{index}]: path must be an absolute path other than /, not {path!r}")
        state = entry.get("state", "file")
        if state not in STATES:
            raise EntryError("{}: state must be one of {}, not {!r}".format(where, ", ".join(STATES), state))
        # An absent entry may keep the keys of the file it replaces (one static list, state chosen by a condition).
        allowed = COMMON | KEYS[state] | (KEYS["file"] if state == "absent" else set())
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise EntryError("{}: {} not allowed with state={}".format(where, ", ".join(unknown), state))
        norm = {"path": os.path.normpath(path), "state": state}
        if state in ("file", "directory"):
            mode = entry.get("mode", "0644" if state == "file" else "0755")
            if isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o7777:
                norm["mode"] = mode  # YAML read an unquoted 0644 as the number already
            elif isinstance(mode, str) and re.match(r"^0?[0-7]{3,4}$", mode):
                norm["mode"] = int(mode, 8)
            else:
                raise EntryError(f"{where}: mode must be octal like '0644' (quoted), not {mode!r}")
            for key in ("owner", "group"):
                value = entry.get(key, "root")
                if not isinstance(value, str) or not value:
                    raise EntryError(f"{where}: {key} must be a user or group name, not {value!r}")
                norm[key] = value
        if state == "file":
            content = entry.get("content")
            if not isinstance(content, str):
                raise EntryError(f"{where}: content (text) is required with state=file")
            norm["content"] = content
            check = entry.get("validate")
            if check not in (None, ""):
                if not isinstance(check, str) or "%s" not in check:
                    raise EntryError(f"{where}: validate must be a command with %s (the new file), not {check!r}")
                norm["validate"] = check
        if state == "line":
            line = entry.get("line")
            if not isinstance(line, str) or "\n" in line:
                raise EntryError(f"{where}: line must be one line of text, not {line!r}")
            norm["line"] = line
            if entry.get("insertafter") and entry.get("insertbefore"):
                raise EntryError(f"{where}: give insertafter or insertbefore, not both")
            for key in ("regexp", "insertafter", "insertbefore"):
                value = entry.get(key)
                if value in (None, ""):
                    continue
                if key == "insertbefore" and value == "BOF" or key == "insertafter" and value == "EOF":
                    norm[key] = value
                    continue
                try:
                    norm[key] = re.compile(value)
                except (re.error, TypeError) as exc:
                    raise EntryError(f"{where}: {key} is not a regular expression: {exc}") from None
        if norm["path"] in seen:
            raise EntryError("{}: the same path as files[{}]".format(where, seen[norm["path"]]))
        seen[norm["path"]] = index
        out.append(norm)
    return out


def place_line(text, entry):
    """The file's new text with entry's line in place (lineinfile's rules), or None when it is there already."""
    lines = text.splitlines(True)
    want = entry["line"]
    regexp = entry.get("regexp")
    if regexp is not None:
        hits = [i for i, current in enumerate(lines) if regexp.search(current.rstrip("\r\n"))]
        if hits:
            i = hits[-1]
            if lines[i].rstrip("\r\n") == want:
                return None
            lines[i] = want + "\n"
            return "".join(lines)
    elif any(current.rstrip("\r\n") == want for current in lines):
        return None
    before, after = entry.get("insertbefore"), entry.get("insertafter")
    if before == "BOF":
        at = 0
    elif before is not None:
        found = [i for i, current in enumerate(lines) if before.search(current.rstrip("\r\n"))]
        at = found[0] if found else len(lines)
    elif after is not None and after != "EOF":
        found = [i for i, current in enumerate(lines) if after.search(current.rstrip("\r\n"))]
        at = found[-1] + 1 if found else len(lines)
    else:
        at = len(lines)
    if at == len(lines) and lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines.insert(at, want + "\n")
    return "".join(lines)


def _read(path):
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", errors="surrogateescape")


def _write(module, path, text, check=None):
    """Write text to path atomically; with check (a command with %s), only when the command accepts the new file."""
    directory = os.path.dirname(path)
    # No suffix: a directory read by glob (sshd_config.d/*.conf, cron.d) never picks the temporary file up.
    fd, tmp = tempfile.mkstemp(prefix=".metalab-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8", errors="surrogateescape"))
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            rc, out, err = module.run_command(check % tmp)
            if rc != 0:
                module.fail_json(msg=f"{path}: the new content failed validation (rc {rc}): {err or out}".strip())
        module.atomic_move(tmp, path, unsafe_writes=False)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _attrs(module, entry, changed):
    file_args = {
        "path": entry["path"],
        "mode": entry["mode"],
        "owner": entry["owner"],
        "group": entry["group"],
        "secontext": [None, None, None, None],  # leave SELinux labels as they are
        "attributes": None,
    }
    return module.set_fs_attributes_if_different(file_args, changed)


def apply(module, entries):
    changed_paths = []
    diffs = []
    for entry in entries:
        path = entry["path"]
        state = entry["state"]
        exists = os.path.lexists(path)
        changed = False
        if state == "absent":
            if exists:
                if os.path.isdir(path) and not os.path.islink(path):
                    module.fail_json(msg=f"{path}: is a directory; host_files never removes directories")
                diffs.append({"before_header": path, "after_header": path, "before": _read(path), "after": ""})
                if not module.check_mode:
                    os.unlink(path)
                changed = True
        elif state == "directory":
            if exists and not os.path.isdir(path):
                module.fail_json(msg=f"{path}: exists and is not a directory")
            if not exists:
                changed = True
                if not module.check_mode:
                    os.makedirs(path)
            if os.path.isdir(path):
                changed = _attrs(module, entry, changed)
        elif state == "file":
            if exists and not stat.S_ISREG(os.lstat(path).st_mode):
                module.fail_json(msg=f"{path}: exists and is not a regular file")
            before = _read(path) if exists else ""
            if not exists or before != entry["content"]:
                parent = os.path.dirname(path)
                if not os.path.isdir(parent) and not module.check_mode:
                    module.fail_json(msg=f"{path}: directory {parent} does not exist")
                diffs.append({"before_header": path, "after_header": path, "before": before, "after": entry["content"]})
                changed = True
                if not module.check_mode:
                    _write(module, path, entry["content"], entry.get("validate"))
            if os.path.exists(path):
                changed = _attrs(module, entry, changed)
        else:  # line
            if not os.path.isfile(path):
                module.fail_json(msg=f"{path}: does not exist (state=line edits an existing file)")
            before = _read(path)
            after = place_line(before, entry)
            if after is not None:
                diffs.append({"before_header": path, "after_header": path, "before": before, "after": after})
                changed = True
                if not module.check_mode:
                    _write(module, path, after)  # atomic_move keeps the file's owner and mode
        if changed:
            changed_paths.append(path)
    return changed_paths, diffs


def main():
    module = AnsibleModule(
        argument_spec={"files": {"type": "list", "elements": "dict", "required": True}},
        supports_check_mode=True,
    )
    try:
        entries = validate(module.params["files"])
    except EntryError as exc:
        module.fail_json(msg=str(exc))
    changed_paths, diffs = apply(module, entries)
    result = {"changed": bool(changed_paths), "changed_paths": changed_paths}
    if module._diff:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
