"""Moving a lab user's home between lab hosts: manifests, checksummed archives, verified imports (issue 17)."""
