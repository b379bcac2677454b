"""The scripted model server for tests with real agent CLIs (see core.py)."""
from .core import ModelServer, Plan, Turn

__all__ = ["ModelServer", "Plan", "Turn"]
