"""What ships to worker nodes: the runner of one attempt and the agent CLIs' dialects.

Python standard library only, importing nothing outside this folder: each attempt copies
the files named in ``shipped.txt`` (:data:`specfleet.node.runfiles.FILES`) into its run
directory on the node, where ``python3 runner.py`` imports them as flat modules.
"""
from pathlib import Path

DIR = Path(__file__).resolve().parent
