"""What ships to worker nodes: the runner of one attempt and the agent CLIs' dialects.

Python standard library only, importing nothing outside this folder: each attempt copies
``FILES`` (see :mod:`specfleet.node.runner`) into its run directory on the node.
"""
from pathlib import Path

DIR = Path(__file__).resolve().parent
