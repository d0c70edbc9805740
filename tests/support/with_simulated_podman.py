"""Run a metalab command line (``-m MODULE ARGS...``) over the simulated podman: test support, never shipped.

    python tests/support/with_simulated_podman.py STATE_FILE -m metalab.host.guard.cli --now 1700000000 run

The product has no test engine: this launcher replaces the guard's engine factory before the command starts, so
every Lab the command makes (the guard's, the broker's) drives SimulatedPodman over STATE_FILE. The state file
survives across processes, so a test can look at what the command did to the "containers" and inject faults.
"""

from __future__ import annotations

import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from simulated_podman import SimulatedPodman, use_simulated_podman  # noqa: E402


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit("usage: with_simulated_podman.py STATE_FILE -m MODULE [ARGS...]")
    state, module = sys.argv[1], sys.argv[3]
    use_simulated_podman(SimulatedPodman(state))
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
