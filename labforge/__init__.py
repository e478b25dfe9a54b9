"""Helpers for labforge that are not layers: the hosts file, run-result checks."""
