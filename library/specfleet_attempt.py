# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_attempt.py; this file
# carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_attempt
short_description: Start one attempt's coding-agent runner on a node, or collect its result
description:
  - Delegate it to the spec's node (C(specfleet_node)).
  - C(state=started) brings the node's bare mirror of the project up to date (a C(git bundle) of
    only what the node lacks, or a fetch from the repository URL with C(transport=remote)), builds
    the agent prompt (the spec plus five context layers within C(prompt_budget) characters) and
    C(job.json) on the controller, copies them with the runner into the attempt's run directory
    and starts the runner detached. If the run directory already has a started job it attaches
    and sends nothing.
  - The runner makes a fresh workspace clone on branch C(specfleet/<project>/<task_id>) from the
    integration tip (or the base branch) with the spec's dependencies merged, runs the executor
    chain (fallback on rate limits), the spec's verify command and the gates, feeding failures
    back for up to C(retries) more rounds, then commits and bundles the result.
  - C(state=collected) copies the run directory's status, logs, prompts, patch and bundle to the
    artifacts directory, imports the branch into the project's repository (or checks the push) and
    records the attempt in the state store. It fails unless the branch is there with the node's
    commit, so a spec is never marked done without its work.
  - Secrets named by an executor's C(env_from_vars) are copied as a file the runner deletes after
    reading; they never appear on a command line, in the status, the store or the artifacts.
options:
  state:
    description: Start the runner or collect its result.
    type: str
    choices: [started, collected]
    required: true
  root:
    description: The node's work root (C(specfleet_work_root)).
    type: str
    required: true
  project:
    description: Project name.
    type: str
    required: true
  task_id:
    description: The spec's task id.
    type: str
    required: true
  attempt:
    description: The attempt number the strategy granted.
    type: int
    required: true
  run_id:
    description: The dispatch run's id.
    type: str
    required: true
  node:
    description: The node's inventory name (shown to the agent and in results).
    type: str
    required: true
  timeout:
    description: Seconds the whole attempt may run on the node before its process groups are killed.
    type: int
    default: 3600
  db:
    description: The state database (default C(specfleet_db), then C($SPECFLEET_HOME/state.db)).
    type: path
  specs_root:
    description: Folder of the projects' spec folders (default C(specs/) of the repository).
    type: path
  artifacts:
    description: Where results are kept on the controller (default C($SPECFLEET_HOME/artifacts)).
    type: path
  executors:
    description: The executor definitions (default C(specfleet_executors)).
    type: raw
  node_environment:
    description: Text about the node for the prompt's environment layer (C(specfleet_node_environment)).
    type: str
    default: ""
  agent_user:
    description:
      - The unprivileged user the agent and the verify command run as (C(specfleet_agent_user)).
      - A runner that logs in as root switches to it; agents never run as root.
    type: str
    default: specfleet
  prompt_budget:
    description: Largest prompt in characters; context layers shrink in a fixed order to fit, the spec never does.
    type: int
    default: 60000
  executor:
    description: Run this executor (and its fallbacks) instead of the spec's, e.g. C(replay) (C(-e specfleet_executor=...)).
    type: str
  heartbeat:
    description:
      - Seconds between the runner's heartbeats (the C(heartbeat) file in the run directory).
      - The wait (M(specfleet_job) O(stall)) declares the job stalled when the heartbeat is older
        than its stall limit, so keep that limit several heartbeats long.
    type: int
    default: 10
  leftover:
    description:
      - With O(state=collected), the attempt is a dead run's job that C(playbooks/collect.yml) collects.
        The spec moves on here (C(completed), or a spec failure that uses an attempt) and a failed
        attempt is a result, not a failed task.
    type: bool
    default: false
  python:
    description: Python 3 on the node that runs the runner.
    type: str
    default: python3
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Starts and collects nothing.
  platform:
    platforms: posix
notes:
  - Needs C(git), C(flock), C(python3) and the executor's CLI on the node.
author:
  - specfleet contributors
"""

EXAMPLES = r"""
- name: Start the attempt
  specfleet_attempt:
    state: started
    root: "{{ hostvars[specfleet_node].specfleet_work_root }}"
    project: "{{ specfleet_project }}"
    task_id: "{{ specfleet_task_id }}"
    attempt: "{{ specfleet_attempt }}"
    run_id: "{{ specfleet_run_id }}"
    node: "{{ specfleet_node }}"
  delegate_to: "{{ specfleet_node }}"
"""

RETURN = r"""
run_dir:
  description: The attempt's run directory on the node.
  type: str
  returned: always
base:
  description: The commit the workspace started from (before dependencies were merged).
  type: str
  returned: state=started
prompt_left_out:
  description: Context layers cut or left out to fit the prompt budget.
  type: list
  returned: state=started
executor:
  description: The executor whose run produced the result.
  type: str
  returned: state=collected
commit:
  description: The commit on the spec's branch.
  type: str
  returned: state=collected
artifacts:
  description: The controller folder holding the attempt's status, logs, prompts, patch and bundle.
  type: str
  returned: state=collected
specfleet_job_started:
  description: The run directory of the runner this step started or attached to (read by the specfleet_dag strategy).
  type: str
  returned: state=started, success
specfleet_branch_collected:
  description: The task id whose branch this step brought back (the specfleet_dag strategy then frees the slot).
  type: str
  returned: state=collected, success
specfleet_ending:
  description:
    - How the spec's pipeline ended when the failure is not the spec's own (C(infrastructure) while starting,
      C(job_ended) when the collected attempt failed for infrastructure reasons); see C(specfleet.model.ending.Ending).
  type: str
  returned: failure of the node or the machinery
"""
