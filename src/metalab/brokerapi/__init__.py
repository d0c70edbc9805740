"""The broker's wire protocol and its client: all that the unprivileged portal shares with the root side.

Standard library only; nothing here imports metalab.host, so the portal never loads the guard or the broker."""
