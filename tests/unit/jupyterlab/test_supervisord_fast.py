"""The runtime image's supervisord wrapper (roles/runtime_image/templates/build/supervisord-fast.j2), run against a
stand-in supervisor package: its autostart programs get their first transition before the main loop, and supervisor's
`import pkg_resources` gets the small stand-in, which resolves "module:attr" specs like the real EntryPoint."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[3] / "roles/runtime_image/templates/build/supervisord-fast.j2"

FAKE_SUPERVISORD = textwrap.dedent(
    """
    import os.path
    import pkg_resources


    class Supervisor:
        def __init__(self):
            self.process_groups = {}

        def runforever(self):
            print("main loop")


    class Group:
        def __init__(self, name):
            self.name = name

        def __lt__(self, other):
            return self.name < other.name

        def transition(self):
            print("transition", self.name)


    def main():
        print("stand-in", not hasattr(pkg_resources, "__file__"))
        print("resolves", pkg_resources.EntryPoint.parse("x=os.path:join").resolve() is os.path.join)
        print("dotted", pkg_resources.EntryPoint.parse("x = os:path.join").resolve() is os.path.join)
        print("module", pkg_resources.EntryPoint.parse("x=os.path").resolve() is os.path)
        sup = Supervisor()
        sup.process_groups = {"b": Group("b"), "a": Group("a")}
        sup.runforever()
        return 3
    """
)


def test_wrapper_spawns_before_the_loop_and_never_imports_pkg_resources(tmp_path: Path) -> None:
    pkg = tmp_path / "supervisor"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "supervisord.py").write_text(FAKE_SUPERVISORD)
    # The template's only Jinja is the ansible_managed comment on line 2.
    lines = TEMPLATE.read_text().splitlines()
    assert "ansible_managed" in lines[1]
    script = tmp_path / "supervisord"
    script.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    proc = subprocess.run(
        [sys.executable, "-S", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines() == [
        "stand-in True",
        "resolves True",
        "dotted True",
        "module True",
        "transition a",
        "transition b",
        "main loop",
    ]
