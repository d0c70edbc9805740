"""SELinux planning (plugins/module_utils/selinux.py): file context rules, booleans, modules; and metalab's policy
modules compile with the SELinux toolchain (checkmodule, semodule_package)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.metalab.lab.plugins.filter.selinux import FilterModule
from ansible_collections.metalab.lab.plugins.module_utils import selinux

ROOT = Path(__file__).resolve().parents[3]
MODULES = sorted(ROOT.glob("roles/*/files/selinux/*.te"))

# `semanage fcontext -l -C` on a host with one local rule of metalab and one of the admin.
LISTING = """\
SELinux fcontext                                   type               Context

/srv/metalab/homes(/.*)?                           all files          system_u:object_r:container_file_t:s0
/opt/data(/.*)?                                    all files          system_u:object_r:httpd_sys_content_t:s0
"""


@pytest.mark.parametrize(
    ("path", "spec"),
    [
        ("/srv/metalab/homes", "/srv/metalab/homes(/.*)?"),
        ("/srv/metalab/homes/", "/srv/metalab/homes(/.*)?"),
        ("/run/metalab/sockets", "/run/metalab/sockets(/.*)?"),
        ("/srv/lab.homes+1", r"/srv/lab\.homes\+1(/.*)?"),
        ("/srv/lab-homes", "/srv/lab-homes(/.*)?"),
    ],
)
def test_a_path_becomes_a_rule_for_it_and_everything_under_it(path, spec):
    assert selinux.fcontext_spec(path) == spec


def test_no_rule_for_the_root():
    with pytest.raises(ValueError, match="relabel the whole host"):
        selinux.fcontext_spec("/")


@pytest.mark.parametrize(
    ("listing", "path", "argv"),
    [
        ("", "/srv/metalab/homes",
         ["semanage", "fcontext", "-a", "-t", "container_file_t", "/srv/metalab/homes(/.*)?"]),
        (LISTING, "/srv/metalab/homes", None),
        (LISTING, "/opt/data", ["semanage", "fcontext", "-m", "-t", "container_file_t", "/opt/data(/.*)?"]),
        (LISTING, "/run/metalab/sockets",
         ["semanage", "fcontext", "-a", "-t", "container_file_t", "/run/metalab/sockets(/.*)?"]),
    ],
)  # fmt: skip
def test_the_rule_is_added_changed_or_left(listing, path, argv):
    assert selinux.fcontext_argv(listing, selinux.fcontext_spec(path), "container_file_t") == argv
    assert FilterModule().filters()["selinux_fcontext_argv"](listing, path, "container_file_t") == (argv or [])


def test_booleans_off_and_unknown():
    out = "httpd_can_network_connect --> off\nhttpd_can_network_relay --> on\ncontainer_use_devices --> off\n"
    assert selinux.booleans_off(out, ["httpd_can_network_connect", "httpd_can_network_relay"]) == [
        "httpd_can_network_connect"
    ]
    assert selinux.booleans_off(out.replace("connect --> off", "connect --> on"), ["httpd_can_network_connect"]) == []
    with pytest.raises(AnsibleFilterError, match="not in this host's policy: container_use_xserver_devices"):
        FilterModule().filters()["selinux_booleans_off"](out, ["container_use_xserver_devices"])


@pytest.mark.parametrize("listing", ["container\nmetalab_frontdoor\n", "container 2.229.0\nmetalab_frontdoor 1.0\n"])
def test_module_loaded_with_or_without_versions(listing):
    assert selinux.module_loaded(listing, "metalab_frontdoor")
    assert not selinux.module_loaded(listing, "metalab_gpu")
    assert not selinux.module_loaded("metalab_frontdoor_old\n", "metalab_frontdoor")


def test_the_modules_are_the_ones_the_roles_load():
    names = {(te.parents[2].name, te.stem) for te in MODULES}
    assert names == {("frontdoor", "metalab_frontdoor"), ("nvidia_container_toolkit", "metalab_gpu")}
    for role, name in names:
        tasks = "\n".join(p.read_text() for p in (ROOT / "roles" / role / "tasks").glob("*.yml"))
        assert f"__common_selinux_module: {{role: {role}, name: {name}}}" in tasks
        assert f"module {name} 1.0;" in (ROOT / "roles" / role / "files" / "selinux" / f"{name}.te").read_text()


@pytest.mark.parametrize("te", MODULES, ids=lambda p: p.stem)
def test_each_policy_module_compiles_and_packages(te, tmp_path):
    tools = [tool for tool in ("checkmodule", "semodule_package") if shutil.which(tool) is None]
    if tools:
        reason = f"{', '.join(tools)} missing (Debian packages checkpolicy and semodule-utils)"
        if os.environ.get("METALAB_REQUIRE_ALL") == "1":  # make test: a missing requirement fails
            pytest.fail(reason)
        pytest.skip(reason)
    mod, pp = tmp_path / f"{te.stem}.mod", tmp_path / f"{te.stem}.pp"
    done = subprocess.run(["checkmodule", "-M", "-m", "-o", str(mod), str(te)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(["semodule_package", "-o", str(pp), "-m", str(mod)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert pp.stat().st_size > 0


def test_a_broken_module_does_not_compile(tmp_path):
    if shutil.which("checkmodule") is None:
        if os.environ.get("METALAB_REQUIRE_ALL") == "1":
            pytest.fail("checkmodule missing (Debian package checkpolicy)")
        pytest.skip("checkmodule missing")
    broken = tmp_path / "broken.te"
    broken.write_text("module broken 1.0;\nrequire { type httpd_t; }\nallow httpd_t nosuch_t:file read;\n")
    done = subprocess.run(["checkmodule", "-M", "-m", "-o", str(tmp_path / "b.mod"), str(broken)], capture_output=True)
    assert done.returncode != 0
