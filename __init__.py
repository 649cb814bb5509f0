"""Orchestry: a self-hosted control plane that runs containerized HTTP apps on Docker."""

__version__ = "0.1.0"
