"""Regression tests, one file per fixed bug; they use the integration fixtures (real nodes on loopback)."""
from __future__ import annotations

from tests.integration.conftest import cluster, controller, fleet  # noqa: F401 (fixtures)
