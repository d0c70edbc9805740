"""docs/roles/ is what tools/role_docs.py makes from the roles' argument specs, and the tool notices drift."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest


def test_committed_role_docs_are_up_to_date(role_docs, root):
    stale = role_docs.stale_files(root)
    assert stale == [], f"docs/roles/ is stale: {stale}; run `python tools/role_docs.py` and commit the result"


@pytest.fixture
def lab(tmp_path, root, role_docs):
    """A copy of the roles' specs and defaults, with the docs made from them, to change without touching the
    checkout."""
    for path in root.glob("roles/*/*/main.yml"):
        if path.parent.name == "defaults":
            (tmp_path / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, tmp_path / path.relative_to(root))
    for path in root.glob("roles/*/meta/argument_specs.yml"):
        (tmp_path / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / path.relative_to(root))
    role_docs.write(tmp_path)
    return tmp_path


def run_tool(root, *args):
    tool = root / "tools" / "role_docs.py"
    return subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True, check=False)


def test_check_names_the_page_of_a_changed_spec(lab, root):
    assert run_tool(root, "--check", "--root", str(lab)).returncode == 0
    spec = lab / "roles" / "storage" / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text().replace("default: metalab-home", "default: metalab-homes"))
    done = run_tool(root, "--check", "--root", str(lab))
    assert done.returncode == 1
    assert "stale: docs/roles/storage.md" in done.stderr
    assert "base.md" not in done.stderr
    assert run_tool(root, "--root", str(lab)).returncode == 0
    assert "`metalab-homes`" in (lab / "docs" / "roles" / "storage.md").read_text()
    assert run_tool(root, "--check", "--root", str(lab)).returncode == 0


def test_a_new_role_gets_a_page_and_an_index_entry(lab, root, role_docs):
    (lab / "roles" / "extra" / "meta").mkdir(parents=True)
    (lab / "roles" / "extra" / "defaults").mkdir()
    (lab / "roles" / "extra" / "defaults" / "main.yml").write_text("---\nextra_platform_vars: {}\n")
    (lab / "roles" / "extra" / "meta" / "argument_specs.yml").write_text(
        textwrap.dedent("""\
            ---
            argument_specs:
              main:
                short_description: Shared plumbing
                options:
                  extra_platform_vars:
                    type: dict
                    description: Per-platform variables, C(vars/<Distribution>_<major>.yml).
                  lab_proxy_env:
                    type: list
                    elements: dict
                    options:
                      name: {type: str, required: true, description: Variable name.}
            """)
    )
    assert role_docs.stale_files(lab) == ["docs/roles/README.md", "docs/roles/extra.md"]
    role_docs.write(lab)
    page = (lab / "docs" / "roles" / "extra.md").read_text()
    assert (
        "| `extra_platform_vars` | dict | `{}` | no | — | Per-platform variables, `vars/<Distribution>_<major>.yml`. |"
        in page
    )
    assert "### `lab_proxy_env`: each element" in page
    assert "| `name` | str | — | yes | — | Variable name. |" in page
    assert "| [extra](extra.md) | `main` | Shared plumbing |" in (lab / "docs" / "roles" / "README.md").read_text()
    # Deterministic: a second write changes nothing.
    assert role_docs.write(lab) == []


def test_the_page_of_a_removed_role_is_stale(lab, role_docs):
    shutil.rmtree(lab / "roles" / "portal")
    assert role_docs.stale_files(lab) == ["docs/roles/README.md", "docs/roles/portal.md (no such role)"]
    role_docs.write(lab)
    assert not (lab / "docs" / "roles" / "portal.md").exists()


def test_values_are_written_as_in_an_inventory(role_docs):
    fmt = role_docs.fmt_value
    assert fmt("0660") == '"0660"' and fmt("580") == '"580"' and fmt("") == '""'
    assert fmt(["15m", "5m"]) == "[15m, 5m]"
    assert fmt({"/tmp": "1g", "x": None, "on": True}) == '{/tmp: 1g, x: null, "on": true}'
    assert fmt("http://deb.debian.org/debian") == "http://deb.debian.org/debian"
