"""metalab-guard: the host-side session engine and guard of a metalab lab host.

Standard library only; runs on the host's system Python (>= 3.9). Modules:

- ``policy``: durations, limits, rolling budgets, warnings (pure functions, explicit ``now``)
- ``config``: the JSON config file (``/etc/metalab/guard.json``)
- ``ledger``: the SQLite (WAL) ledger of runtimes and the audit trail
- ``engine``: the container engine (podman, argv lists only)
- ``sessions``: start / stop / extend / list / usage, the guard run and the boot run
- ``metrics``: the Prometheus textfile
- ``cli``: ``metalab-guard``
- ``simulated``: a simulated podman for tests and benchmarks (``runtime.engine: "fake"``)
"""
