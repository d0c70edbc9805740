"""Throwaway lab hosts for tests and the demo (``labctl sandbox``)."""
