# Copyright: metalab contributors
# Apache-2.0
"""Filters that build metalab.lab.host_files entries on the controller."""

from __future__ import annotations

import os
import re

DOCUMENTATION = r"""
name: ca_certificate_files
short_description: metalab.lab.host_files entries for extra CA certificates
description:
  - Pairs the certificate paths of C(lab_extra_ca_certificates) with their contents (read on the controller,
    for instance with C(query('ansible.builtin.file', *certs, rstrip=false))) and names each one
    C(<ca_dir>/metalab-<name>.crt), where C(<name>) is the file name without C(.crt) or C(.pem).
positional: contents, ca_dir
options:
  _input:
    description: The certificate paths.
    type: list
    elements: str
    required: true
  contents:
    description: The certificates' contents, in the same order.
    type: list
    elements: str
    required: true
  ca_dir:
    description: The trust store's directory of local certificates.
    type: str
    required: true
"""

EXAMPLES = r"""
files: "{{ certs | metalab.lab.ca_certificate_files(query('ansible.builtin.file', *certs, rstrip=false),
                                                    '/usr/local/share/ca-certificates') }}"
"""

RETURN = r"""
_value:
  description: One host_files entry (path, content, mode 0644) per certificate.
  type: list
  elements: dict
"""


def ca_certificate_files(certs, contents, ca_dir):
    from ansible.errors import AnsibleFilterError

    certs, contents = list(certs), list(contents)
    if len(certs) != len(contents):
        raise AnsibleFilterError(f"ca_certificate_files: {len(certs)} certificates but {len(contents)} contents")
    entries, names = [], {}
    for cert, content in zip(certs, contents):
        name = re.sub(r"\.(crt|pem)$", "", os.path.basename(str(cert)))
        if name in names:
            raise AnsibleFilterError(
                f"lab_extra_ca_certificates: {names[name]} and {cert} would both be installed as metalab-{name}.crt"
            )
        names[name] = cert
        if "-----BEGIN CERTIFICATE-----" not in content:
            raise AnsibleFilterError(f"lab_extra_ca_certificates: {cert} is not a PEM certificate")
        entries.append(
            {"path": "{}/metalab-{}.crt".format(ca_dir.rstrip("/"), name), "content": content, "mode": "0644"}
        )
    return entries


def copy_files(sources, contents, src_root, dest_root, mode="0644", modes=None):
    """host_files entries that copy text files from the controller: each source's path relative to src_root,
    under dest_root, with its content (read on the controller, in the same order) and mode. ``modes`` maps
    relative paths to the mode of that file instead (each one must name a source)."""
    from ansible.errors import AnsibleFilterError

    sources, contents = list(sources), list(contents)
    if len(sources) != len(contents):
        raise AnsibleFilterError(f"copy_files: {len(sources)} sources but {len(contents)} contents")
    root = os.path.normpath(str(src_root))
    modes = dict(modes or {})
    entries = []
    for source, content in zip(sources, contents):
        rel = os.path.relpath(os.path.normpath(str(source)), root)
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            raise AnsibleFilterError(f"copy_files: {source} is not under {src_root}")
        entries.append({"path": os.path.join(str(dest_root), rel), "content": content, "mode": modes.pop(rel, mode)})
    if modes:
        raise AnsibleFilterError(f"copy_files: modes name {', '.join(sorted(modes))}, not among the sources")
    return entries


class FilterModule:
    def filters(self):
        return {"ca_certificate_files": ca_certificate_files, "copy_files": copy_files}
