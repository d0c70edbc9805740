"""labctl: the controller side of metalab (command line, Ansible executor, inventory editing, doctor, sandboxes)."""
