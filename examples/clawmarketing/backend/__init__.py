"""ClawMarketing backend: social-media post management (stdlib only)."""

__version__ = "0.3.0"
