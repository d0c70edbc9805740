"""metalab-broker: the portal's privileged local service (root, unix socket, standard library only).

The portal web app runs unprivileged and asks the broker for everything that needs root: checking passwords,
starting and stopping the caller's runtime through the guard, reading the caller's JupyterLab token. The broker
derives the user from a ticket it minted itself at login, so the portal cannot act for anyone it has no valid
ticket for. Protocol and deployment: docs/portal.md.
"""
