"""metalab portal: the self-service web app of a lab host (log in, start/stop a runtime, open JupyterLab).

It runs as its own unprivileged account and does everything privileged through the broker (metalab.host.broker) over
a unix socket. Deployment and the front door contract: docs/portal.md.
"""
