"""`python -m metalab.labctl`: labctl without its entry-point script (e.g. from a checkout on PYTHONPATH)."""

from metalab.labctl.cli import main

main()
