# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_job.py, over the task's
# connection with raw shell; this file carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_job
short_description: Start, wait for or cancel one attempt's detached job on a worker node
description:
  - Each attempt has a run directory C(<root>/runs/<project>/<task_id>/<attempt>-<run_id>) on the
    node. C(state=started) writes the command there and starts it detached (C(setsid)), so it
    survives a dropped SSH connection and the controller; starting again attaches instead.
  - C(state=finished) blocks until the job has written its exit code, in segments of C(segment)
    seconds, one SSH command each (no polling traffic). SSH outages shorter than C(grace) seconds
    are ridden out; a longer one makes the task unreachable, which the specfleet_dag strategy
    charges to the node, not the spec.
  - C(state=cancelled) marks the job cancelled and signals its process group (TERM, then KILL
    after 30 s).
  - A job whose supervisor died without an exit code (node rebooted) fails with
    C(specfleet_ending=job_ended) (and C(specfleet_infrastructure=true)), so the spec is queued
    again without using an attempt.
options:
  state:
    description: What to do with the job.
    type: str
    choices: [started, finished, cancelled]
    required: true
  root:
    description: The node's work root (C(specfleet_work_root)); C(~/) is the login user's home.
    type: str
    required: true
  project:
    description: Project name; each C(/)-separated part must be letters, digits, C(.), C(_) or C(-).
    type: str
    required: true
  task_id:
    description: The spec's task id.
    type: str
    required: true
  attempt:
    description: The attempt number the strategy granted (C(specfleet_attempt)).
    type: int
    required: true
  run_id:
    description: The dispatch run's id (C(specfleet_run_id)); keeps run directories unique even if the database is replaced.
    type: str
    required: true
  command:
    description: Shell command of the job (C(state=started)); it runs in the spec's workspace.
    type: str
  env:
    description:
      - Environment of the job. Values are passed literally (no shell expansion).
      - C(SPECFLEET_RUN_DIR) and C(SPECFLEET_WORKSPACE) are always set.
    type: dict
    default: {}
  timeout:
    description: Seconds the job may run before it is killed (exit code 124, reported as a timeout).
    type: int
    default: 3600
  grace:
    description: Seconds of SSH outage tolerated while waiting before the node counts as unreachable.
    type: int
    default: 120
  segment:
    description: Longest single wait command, in seconds.
    type: int
    default: 300
  stall:
    description:
      - With O(state=finished), seconds without a node-side heartbeat (the C(heartbeat) file the agent
        runner rewrites every 10 s) after which a job that is still alive counts as stalled. It is
        woken, sent TERM, then KILL 10 s later, and the result is failed with
        C(specfleet_ending=stalled) (and C(specfleet_infrastructure=true)), so the spec is queued again
        without using an attempt.
      - C(0) turns the check off. Jobs without a heartbeat file (plain commands) are never stalled.
    type: int
    default: 0
argument_spec_rules:
  required_if:
    - [state, started, [command]]
attributes:
  action:
    support: full
  async:
    support: none
  check_mode:
    support: full
    details: Starts, waits on and cancels nothing.
  platform:
    platforms: posix
notes:
  - Needs C(sh), C(setsid), C(timeout), C(base64) and C(python3) on the node (Debian has them).
author:
  - specfleet contributors
"""

EXAMPLES = r"""
- name: Start the job
  specfleet_job:
    state: started
    root: "{{ hostvars[specfleet_node].specfleet_work_root }}"
    project: "{{ specfleet_project }}"
    task_id: "{{ specfleet_task_id }}"
    attempt: "{{ specfleet_attempt }}"
    run_id: "{{ specfleet_run_id }}"
    command: ./run-agent.sh
  delegate_to: "{{ specfleet_node }}"
"""

RETURN = r"""
run_dir:
  description: The attempt's run directory on the node.
  type: str
  returned: always
rc:
  description: The job's exit code.
  type: int
  returned: state=finished
started_at:
  description: Node clock when the job started (seconds since the epoch).
  type: float
  returned: state=finished
ended_at:
  description: Node clock when the job ended.
  type: float
  returned: state=finished
output_tail:
  description: The last 4 KiB of the job's output.
  type: str
  returned: state=finished
cancelled:
  description: Whether stop.yml cancelled the job.
  type: bool
  returned: state=finished
specfleet_job_started:
  description: The run directory of the job this step started or attached to (read by the specfleet_dag strategy).
  type: str
  returned: state=started, success
specfleet_job_waited:
  description: The run directory of the job this step waited on (read by the specfleet_dag strategy).
  type: str
  returned: state=finished
specfleet_ending:
  description:
    - How the spec's pipeline ended when the failure is not the spec's own (C(infrastructure), C(job_ended),
      C(stalled)); see C(specfleet.model.ending.Ending). The specfleet_dag strategy reads it.
  type: str
  returned: failure of the node or the machinery
specfleet_infrastructure:
  description: True with every C(specfleet_ending) above; kept for playbooks' C(failed_when).
  type: bool
  returned: failure of the node or the machinery
"""
