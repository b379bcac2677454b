# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_attempt`` (documentation in ``library/specfleet_attempt.py``).

Runs delegated to the spec's node. ``state=started`` brings the node's mirror up to
date, builds the prompt and ``job.json`` on the controller (``specfleet.attempt.lifecycle``),
copies them with the runner into the run directory and starts the runner detached
(``specfleet.dispatch.jobs``). ``state=collected`` brings the run directory's files back to the
artifacts directory, imports the spec's branch and records the attempt. Secrets travel
only as a file copied over SFTP/SCP, never on a command line.
"""
from __future__ import annotations

import json
import shlex

from ansible.errors import AnsibleError

from ansible_specfleet.action import SpecfleetAction
from ansible_specfleet.results import BRANCH_COLLECTED, JOB_STARTED
from specfleet.attempt import lifecycle as attempts
from specfleet.attempt import workspace
from specfleet.dispatch import jobs
from specfleet.model.ending import Ending
from specfleet.store.core import StoreError

FINALIZE = '{python} ./runner.py finalize "$PWD" "$rc" >> runner-finalize.log 2>&1; rm -f secrets.json'


def _python(value: str) -> str:
    """The node's interpreter as shell words; Ansible's ``auto*`` discovery values mean python3."""
    if not value or value.startswith("auto"):
        return "python3"
    return " ".join(shlex.quote(word) for word in shlex.split(value))


class ActionModule(SpecfleetAction):
    TRANSFERS_FILES = True
    _requires_connection = True

    def perform(self, result, args, task_vars):
        self._vars = task_vars
        try:
            run = jobs.run_dir(args["root"], args["project"], args["task_id"], args["attempt"], args["run_id"])
        except jobs.JobError as exc:
            return dict(result, failed=True, msg=str(exc))
        result["run_dir"] = run
        if self._task.check_mode:
            return dict(result, skipped=True, msg="check mode: no attempt started or collected")
        try:
            if args["state"] == "started":
                return self._start(result, args, run)
            return self._collect(result, args, run)
        except (attempts.AttemptError, workspace.GitError, jobs.JobError, StoreError, ValueError) as exc:
            return dict(result, failed=True, msg=str(exc))

    # -- helpers ----------------------------------------------------------------------

    def _lookup(self, name: str):
        value = self._vars.get(name)
        if value is None:
            return None
        try:
            return str(self._templar.template(value))
        except AnsibleError as exc:
            # An inline !vault value in a run without the vault password: the key is absent here,
            # and the node's credentials file (bootstrap) may hold it. Anything else is an error.
            if "vault" in str(exc).lower() or "decrypt" in str(exc).lower():
                return None
            raise

    def _executors(self, args: dict):
        value = args["executors"] if args["executors"] is not None else self._vars.get("specfleet_executors")
        return self._templar.template(value) if value is not None else None

    # -- started ----------------------------------------------------------------------

    def _start(self, result: dict, args: dict, run: str) -> dict:
        mirror = workspace.mirror_dir(args["root"], args["project"])
        probe = self._shell(workspace.mirror_probe_script(mirror, run))
        if probe["rc"] != 0:
            return dict(result, **Ending.INFRASTRUCTURE.result(
                msg=f"could not prepare {mirror} on {args['node']}: {probe['stderr'].strip()[-500:]}"))
        home, attached, tips = workspace.parse_probe(probe["stdout"])
        if attached:
            return dict(result, changed=False, attached=True, msg="already started: attached to it", **{JOB_STARTED: run})
        prepared = attempts.prepare(
            db=args["db"], specs_root=args["specs_root"], project=args["project"], task_id=args["task_id"],
            attempt=args["attempt"], run_id=args["run_id"], node=args["node"], root=args["root"], home=home,
            executors=self._executors(args), lookup=self._lookup, node_environment=args["node_environment"],
            agent_user=args["agent_user"],
            budget=args["prompt_budget"], executor=args["executor"])
        on_node = workspace.on_node(run, home)
        mirror_on_node = prepared.job["mirror"]
        if prepared.config.transport == "bundle":
            try:
                workspace.send_bundle(prepared.config.repository, prepared.start, tips, mirror_on_node, on_node,
                                      self._shell, self._transfer_file)
            except workspace.GitError as exc:
                return dict(result, **Ending.INFRASTRUCTURE.result(msg=str(exc)))
        files = {attempts.RUNNER_ARCHIVE: attempts.runner_archive()}
        prepared.job["heartbeat_s"] = max(1, args["heartbeat"])
        files["job.json"] = json.dumps(prepared.job, indent=1).encode()
        files["prompt.md"] = prepared.prompt.encode()
        if prepared.recording is not None:
            files["recording.patch"] = prepared.recording
        if prepared.secrets:
            files["secrets.json"] = json.dumps(prepared.secrets).encode()
        for name, data in files.items():
            self._transfer_data(f"{on_node}/{name}", data)
        python = _python(args["python"])
        command = (f'tar -xf "$SPECFLEET_RUN_DIR/{attempts.RUNNER_ARCHIVE}" -C "$SPECFLEET_RUN_DIR" --no-same-owner'
                   f' && rm -f "$SPECFLEET_RUN_DIR/{attempts.RUNNER_ARCHIVE}"'
                   f' && exec {python} "$SPECFLEET_RUN_DIR/runner.py" run "$SPECFLEET_RUN_DIR"')
        script = jobs.launch_script(run, prepared.job["workspace"], command, {}, args["timeout"],
                                    on_exit=FINALIZE.format(python=python))
        answer = self._shell(script)
        if answer["rc"] != 0:
            self._shell(f"rm -f {jobs.shell_path(on_node + '/secrets.json')}")
            return dict(result, **Ending.INFRASTRUCTURE.result(
                msg=f"could not start the runner in {run}: {(answer['stderr'] or answer['stdout']).strip()}"))
        attached = "ATTACHED" in answer["stdout"]
        return dict(result, changed=not attached, attached=attached, **{JOB_STARTED: run},
                    executors=[e["name"] for e in prepared.job["executors"]],
                    base=prepared.start.base, base_ref=prepared.start.base_ref, notes=prepared.notes,
                    prompt_left_out=prepared.left_out, workspace=prepared.job["workspace"],
                    msg=f"started with {prepared.job['executors'][0]['name']} on {args['node']}")

    # -- collected --------------------------------------------------------------------

    def _collect(self, result: dict, args: dict, run: str) -> dict:
        folder = workspace.artifacts_dir(args["project"], args["task_id"], args["attempt"], args["run_id"],
                                         args["artifacts"])
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # One command packs the artifacts, one transfer brings them back.
        packed = self._shell(workspace.collect_script(run, attempts.ARTIFACT_NAMES))
        if packed["rc"] != 0 or "PACKED" not in packed["stdout"]:
            return dict(result, failed=True, msg=f"could not pack the run directory {run}: "
                                                 f"{(packed['stderr'] or packed['stdout']).strip()[-500:]}")
        home, _attached, _tips = workspace.parse_probe(packed["stdout"])
        archive = folder / "collect.tar"
        self._connection.fetch_file(f"{workspace.on_node(run, home)}/collect.tar", str(archive))
        attempts.unpack(archive, folder)
        secrets = self._secret_values(args)
        attempts.scrub(folder, secrets)
        outcome = attempts.collect(db=args["db"], specs_root=args["specs_root"], project=args["project"],
                                   task_id=args["task_id"], attempt=args["attempt"], run_id=args["run_id"],
                                   folder=folder, leftover=args["leftover"])
        result.update(outcome, changed=outcome["ok"])
        if args["leftover"]:  # collect.yml: a failed attempt is a result here, not a failed task
            return result
        if outcome["ok"]:
            result[BRANCH_COLLECTED] = args["task_id"]
        elif outcome.get("infrastructure"):
            # Requeued without charging an attempt; the job is over (this is its final status).
            result.update(Ending.JOB_ENDED.result())
        else:
            result["failed"] = True
        return result

    def _secret_values(self, args: dict) -> list[str]:
        values = []
        definitions = self._executors(args) or {}
        for definition in definitions.values() if isinstance(definitions, dict) else []:
            for var in (definition or {}).get("env_from_vars", {}).values():
                try:
                    value = self._lookup(var)
                except Exception:  # an undefined or broken variable has no value to scrub
                    value = None
                if value:
                    values.append(value)
        return values
