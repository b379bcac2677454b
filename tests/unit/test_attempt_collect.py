"""How the node's final status becomes an attempt's verdict (specfleet.attempt.collect.judge_status)."""
from __future__ import annotations

import pytest

from specfleet.attempt.collect import Verdict, judge_status

NOT_FINAL = ("the runner's status is not final (state running, phase agent round 1): "
             "the attempt did not finish cleanly")

# status.json as the runner left it                                   -> the verdict before the import
CASES = [
    ({"state": "running", "phase": "agent round 1"},                         Verdict(False, NOT_FINAL)),
    ({"state": "succeeded", "phase": "agent round 1", "commit": "abc"},      Verdict(False, NOT_FINAL.replace(
        "state running", "state succeeded"))),
    ({"state": "failed", "final": True, "error": "verify failed"},           Verdict(False, "verify failed", False)),
    ({"state": "failed", "final": True, "error": "no mirror", "infrastructure": True},
     Verdict(False, "no mirror", True)),
    ({"state": "killed", "final": True},                                     Verdict(False, "the attempt ended killed",
                                                                                     False)),
    ({"state": "succeeded", "final": True},                                  Verdict(False, "the runner reported "
                                                                                     "success without a commit")),
    ({"state": "succeeded", "final": True, "commit": "abc"},                 Verdict(True)),
]


@pytest.mark.parametrize("status,verdict", CASES)
def test_the_nodes_status_is_judged_in_one_place(status, verdict):
    assert judge_status(status) == verdict
