"""Orchestry's configuration: one table of settings, four layers (defaults < file < env < flags)."""

from orchestry.config.settings import SETTINGS, ConfigError, Settings, load_settings

__all__ = ["SETTINGS", "ConfigError", "Settings", "load_settings"]
