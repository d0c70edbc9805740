"""The committed prebuilt JupyterLab extension is built from the committed source, and the runtime image installs
and enables it with the JupyterLab it was built for."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "roles" / "runtime_image"
SPEC = importlib.util.spec_from_file_location("labextension_tool", REPO / "tools" / "labextension.py")
assert SPEC is not None and SPEC.loader is not None
tool = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tool)


def test_the_bundle_is_built_from_the_current_source():
    assert tool.bundle_hash() == tool.source_hash(), (
        "roles/runtime_image/files/metalab-jupyterlab changed without a rebuild: run make labextension and commit "
        "labextension/"
    )


def test_a_source_change_without_a_rebuild_is_noticed(tmp_path):
    copy = tmp_path / "src-copy"
    shutil.copytree(tool.SOURCE, copy, ignore=shutil.ignore_patterns("labextension", "node_modules", "lib"))
    assert tool.source_hash(copy) == tool.source_hash()
    index = copy / "src" / "index.ts"
    index.write_text(index.read_text() + "\n// changed\n")
    assert tool.source_hash(copy) != tool.bundle_hash()


def test_the_bundle_loads_what_it_names():
    meta = json.loads((tool.BUNDLE / "package.json").read_text())
    assert meta["name"] == "metalab-jupyterlab-status"
    assert (tool.BUNDLE / meta["jupyterlab"]["_build"]["load"]).is_file()


def test_the_image_installs_and_enables_it_with_the_jupyterlab_it_was_built_for():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert tool.JUPYTERLAB in defaults["runtime_image_pip_packages"]
    containerfile = (ROLE / "templates" / "build" / "Containerfile.j2").read_text()
    assert "/opt/metalab/venv/share/jupyter/labextensions/metalab-jupyterlab-status/" in containerfile
    assert "metalab_jupyterlab_status.py" in containerfile
    server_config = (ROLE / "templates" / "build" / "jupyter_server_config.json.j2").read_text()
    assert '"jpserver_extensions": {"metalab_jupyterlab_status": true}' in server_config
