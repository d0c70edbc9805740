"""metalab-backup: restic backups of a lab host's homes, and restores that never overwrite (docs/operations.md)."""
