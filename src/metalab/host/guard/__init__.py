"""metalab-guard: the host-side session engine and guard of a metalab lab host.

Standard library only; runs on the host's system Python (>= 3.9). Modules:

- ``policy``: rolling budgets, deadlines and warnings (pure functions, explicit ``now``); the session settings
  themselves (durations, limits, presets) are rules (``metalab.rules``)
- ``config``: the JSON config file (``/etc/metalab/guard.json``)
- ``ledger``: the SQLite (WAL) ledger of runtimes and the audit trail
- ``engine``: the container engine (podman, argv lists only)
- ``sessions``: start / stop / extend / list / usage, the guard run and the boot run
- ``lock``: the guard lock and its gate; ``report``: a run's report and the notices in a user's home
- ``drain``: draining a host before an update
- ``metrics``: the Prometheus textfile
- ``cli``: ``metalab-guard``

The simulated podman the tests use lives with them (tests/support/simulated_podman.py).
"""
