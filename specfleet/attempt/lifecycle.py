# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One attempt of a spec, controller side: the names callers import, from where they now live.

:mod:`specfleet.attempt.prepare` gathers what to send to the node (:func:`prepare`,
:data:`RUNNER_FILES`); :mod:`specfleet.attempt.collect` takes what came back
(:func:`unpack`, :func:`scrub`, :func:`collect`, with the node's status judged in
:func:`~specfleet.attempt.collect.judge_status`). No Ansible here: the
``specfleet_attempt`` action plugin does the SSH.
"""
from __future__ import annotations

from specfleet.attempt.collect import ARTIFACT_NAMES, ARTIFACT_PATTERNS, collect, judge_status, scrub, unpack
from specfleet.attempt.config import AttemptError, load_config
from specfleet.attempt.prepare import LESSONS_IN_PROMPT, RUNNER_ARCHIVE, RUNNER_FILES, Prepared, prepare, runner_archive

__all__ = ["ARTIFACT_NAMES", "ARTIFACT_PATTERNS", "LESSONS_IN_PROMPT", "RUNNER_ARCHIVE", "RUNNER_FILES", "AttemptError",
           "Prepared", "runner_archive", "collect", "judge_status", "load_config", "prepare", "scrub", "unpack"]
