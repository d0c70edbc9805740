"""metalab.lab.module_cache (plugins/callback/module_cache.py): module payloads kept between ansible-playbook runs.

Real ansible-playbook runs on the controller (connection local) with the collection's ansible.cfg, against a
throwaway collection whose module answers with a value from its module_utils: a kept payload is used by the next
run, a changed module_utils file is never served from an old payload, and a cache directory others could write is
not used at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "plugins" / "callback"))
import module_cache  # noqa: E402

MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mltest.cache.plugins.module_utils.value import VALUE


def main():
    AnsibleModule(argument_spec={}).exit_json(changed=False, answer=VALUE)


if __name__ == "__main__":
    main()
"""

LEGACY = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule

AnsibleModule(argument_spec={}).exit_json(changed=False, answer="legacy")
"""

PLAYBOOK = """
- name: Ask the module
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The collection's module
      mltest.cache.answer:
      register: answer
    - name: A module from the playbook's library folder
      legacy_answer:
      register: legacy
    - name: Write what they said
      ansible.builtin.copy:
        content: "{{ {'answer': answer.answer, 'legacy': legacy.answer} | to_json }}"
        dest: "{{ out }}"
        mode: "0644"
"""


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cache = tmp / "cache"
        coll = tmp / "collections" / "ansible_collections" / "mltest" / "cache"
        (coll / "plugins" / "modules").mkdir(parents=True)
        (coll / "plugins" / "module_utils").mkdir(parents=True)
        (coll / "galaxy.yml").write_text("namespace: mltest\nname: cache\nversion: 1.0.0\n")
        (coll / "plugins" / "modules" / "answer.py").write_text(MODULE)
        self.value = coll / "plugins" / "module_utils" / "value.py"
        self.set_value(1)
        (tmp / "library").mkdir()
        (tmp / "library" / "legacy_answer.py").write_text(LEGACY)
        (tmp / "play.yml").write_text(PLAYBOOK)
        self.runs = 0

    def set_value(self, value: int) -> None:
        self.value.write_text(f"VALUE = {value}\n")

    def run(self) -> Dict[str, object]:
        self.runs += 1
        out = self.tmp / f"out-{self.runs}.json"
        env = dict(os.environ)
        env.update(
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=f"{self.tmp / 'collections'}:{ROOT / 'collections'}",
            ANSIBLE_LIBRARY=str(self.tmp / "library"),
            ANSIBLE_LOCAL_TEMP=str(self.tmp / "tmp"),
            ANSIBLE_CACHE_PLUGIN="memory",
            ANSIBLE_DEBUG="1",  # names every payload that is built ("Lock acquired: <cache file>.lock")
            METALAB_MODULE_CACHE_DIR=str(self.cache),
        )
        done = subprocess.run(
            ["ansible-playbook", "-i", "localhost,", "-c", "local", "-e", f"out={out}",
             "-e", f"ansible_python_interpreter={sys.executable}", str(self.tmp / "play.yml")],
            capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=300,
        )  # fmt: skip
        text = done.stdout + done.stderr
        assert done.returncode == 0, text[-4000:]
        built = sorted({line.rsplit("/", 1)[-1] for line in text.splitlines() if "ANSIBALLZ: Lock acquired:" in line})
        warnings = [line for line in text.splitlines() if "module_cache" in line and "WARNING" in line]
        return {"said": json.loads(out.read_text()), "built": built, "warnings": warnings}

    def kept(self) -> List[str]:
        return sorted(p.name for p in self.cache.glob("*/*"))


def built(result: Dict[str, object], name: str) -> bool:
    return any(name in b for b in result["built"])  # type: ignore[union-attr]


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def test_a_kept_payload_is_used_by_the_next_run(lab: Lab) -> None:
    first = lab.run()
    assert first["said"] == {"answer": 1, "legacy": "legacy"}
    assert built(first, "mltest.cache.plugins.modules.answer") and built(first, "ansible.modules.copy")
    kept = lab.kept()
    assert any(k.startswith("ansible_collections.mltest.cache.plugins.modules.answer-") for k in kept), kept
    assert any(k.startswith("ansible.modules.copy-") for k in kept), kept
    # A module found through the library path is named ansible.legacy.*, whatever its file: never kept.
    assert not any(k.startswith("ansible.legacy.") for k in kept), kept
    assert built(first, "ansible.legacy.legacy_answer")

    second = lab.run()
    assert second["said"] == {"answer": 1, "legacy": "legacy"}
    assert not built(second, "mltest.cache") and not built(second, "ansible.modules.copy"), second["built"]
    assert built(second, "ansible.legacy.legacy_answer"), second["built"]  # built again, every run
    assert len(list(lab.cache.iterdir())) == 1  # one signature folder


def test_a_changed_module_utils_file_is_never_served_from_an_old_payload(lab: Lab) -> None:
    assert lab.run()["said"]["answer"] == 1  # type: ignore[index]
    lab.set_value(2)
    changed = lab.run()
    assert changed["said"]["answer"] == 2  # type: ignore[index]
    assert built(changed, "mltest.cache.plugins.modules.answer")
    assert len(list(lab.cache.iterdir())) == 2  # a new signature; the old one is kept (keep: 4)
    lab.set_value(1)  # back to the first content, but a new modification time: a new signature again
    assert lab.run()["said"]["answer"] == 1  # type: ignore[index]


@pytest.mark.parametrize("spoil", ["group-writable", "other-owner", "symlink"])
def test_a_cache_others_could_write_is_not_used(lab: Lab, spoil: str, tmp_path: Path) -> None:
    if spoil == "symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        lab.cache.symlink_to(target)
    else:
        lab.cache.mkdir(mode=0o700)
        if spoil == "group-writable":
            lab.cache.chmod(0o770)
        else:
            os.chown(lab.cache, 65534, 65534)
    result = lab.run()
    assert result["said"] == {"answer": 1, "legacy": "legacy"}  # the run itself is unaffected
    assert result["warnings"] and "not used" in result["warnings"][0], result["warnings"]
    assert list(Path(os.path.realpath(lab.cache)).iterdir()) == []  # nothing written there (or behind the link)
    assert built(lab.run(), "mltest.cache.plugins.modules.answer")  # still built every run


def test_private_dir_accepts_only_the_users_own_closed_directory(tmp_path: Path) -> None:
    good = tmp_path / "good"
    assert module_cache.private_dir(str(good)) is None
    assert (good.stat().st_mode & 0o777) == 0o700
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o757)
    assert "writable by others" in str(module_cache.private_dir(str(open_dir)))
    link = tmp_path / "link"
    link.symlink_to(good)
    assert "not a directory" in str(module_cache.private_dir(str(link)))


def test_prune_keeps_the_most_recently_used_signatures(tmp_path: Path) -> None:
    for i, name in enumerate(["a", "b", "c", "d", "e"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    module_cache.prune(str(tmp_path), "a", keep=3)  # the current one stays, whatever its age
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "d", "e"]


def test_only_payloads_named_for_their_file_are_copied(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    for name in ["ansible.modules.apt-ZIP_DEFLATED-none", "ansible_collections.x.y.plugins.modules.m-ZIP_DEFLATED-none",
                 "ansible.legacy.mine-ZIP_DEFLATED-none", "ansible.modules.apt-ZIP_DEFLATED-none.lock",
                 "ansible.modules.file-ZIP_DEFLATED-none-part"]:  # fmt: skip
        (src / name).write_bytes(b"payload")
    assert module_cache.copy_entries(str(src), str(dst)) == 2
    assert sorted(p.name for p in dst.iterdir()) == [
        "ansible.modules.apt-ZIP_DEFLATED-none",
        "ansible_collections.x.y.plugins.modules.m-ZIP_DEFLATED-none",
    ]
