# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node side of one attempt: its status file, its rounds (agent, verify, gates), its commit.

An :class:`Attempt` is built from its parts: :class:`process.AttemptProcesses` (process
groups, the agent's environment), :class:`gitops.WorkspaceGit` (the workspace and its diff)
and :class:`agent_round.AgentRounds` (the executor chain, verify, the time budget). A round
that fails gets the problems appended to the next round's prompt, up to ``1 + retries``
rounds; the first round that passes every gate is committed and bundled.
"""
from __future__ import annotations

import json
import os
import threading
import time

try:  # inside the controller's package
    from . import agents
    from .agent_round import AgentRounds
    from .credentials import Redactor, read_credentials
    from .executor import sum_usage
    from .gates import Change, run_gates
    from .gitops import WorkspaceGit
    from .process import AttemptProcesses, kill_group
    from .runfiles import InfrastructureError, RunnerError, now, tail, write_atomic
except ImportError:  # copied next to this file on a node
    import agents  # type: ignore[no-redef]
    from agent_round import AgentRounds  # type: ignore[no-redef]
    from credentials import Redactor, read_credentials  # type: ignore[no-redef]
    from executor import sum_usage  # type: ignore[no-redef]
    from gates import Change, run_gates  # type: ignore[no-redef]
    from gitops import WorkspaceGit  # type: ignore[no-redef]
    from process import AttemptProcesses, kill_group  # type: ignore[no-redef]
    from runfiles import InfrastructureError, RunnerError, now, tail, write_atomic  # type: ignore[no-redef]

HEARTBEAT_S = 10
FEEDBACK_BYTES = 6000


class Attempt(AttemptProcesses, WorkspaceGit, AgentRounds):
    def __init__(self, run_dir: str):
        self.run_dir = os.path.abspath(run_dir)
        self.secrets = self._load_secrets()       # first: the file must go whatever else fails
        with open(self.path("job.json"), encoding="utf-8") as handle:
            self.job = json.load(handle)
        self.notes: list[str] = []
        self._node_secrets()
        self.redact = Redactor([v for env in self.secrets.values() for v in env.values()])
        self.status: dict = {"state": "running", "phase": "starting", "task_id": self.job["task_id"],
                             "project": self.job["project"], "attempt": self.job["attempt"],
                             "run_id": self.job["run_id"], "pid": os.getpid(), "pgid": os.getpgid(0),
                             "started_at": now(), "rounds": [], "executor": None, "final": False,
                             "notes": list(self.notes)}
        self.children: set[int] = set()
        self.lock = threading.RLock()   # the SIGTERM handler may save while the main thread is saving
        self.workspace = os.path.expanduser(self.job["workspace"])
        self.agent: agents.AgentUser | None = None
        self.start_commit: str | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def _node_secrets(self) -> None:
        """Keys the controller did not ship come from the node's credentials file (bootstrap wrote it).

        A fallback executor whose key is not there is left out of the chain; the first one
        cannot be, and the attempt fails naming the variable and the file.
        """
        wanted = [e for e in self.job["executors"] if e.get("node_secret_env")]
        if not wanted:
            return
        name = os.path.expanduser(self.job.get("credentials_file") or "")
        found = read_credentials(name)
        kept = []
        for index, executor in enumerate(self.job["executors"]):
            needs = executor.get("node_secret_env") or {}
            missing = sorted(var for var in needs.values() if not found.get(var))
            if missing:
                text = (f"executor {executor['name']} needs {', '.join(missing)}, which neither the controller's "
                        f"vault nor {name or 'a credentials file'} on this node holds (run bootstrap.yml --tags "
                        f"credentials for this node)")
                if index == 0:
                    raise RuntimeError(text)
                self.notes.append(text + ": left out of the fallback chain")
                continue
            self.secrets.setdefault(executor["name"], {}).update({env: found[var] for env, var in needs.items()})
            kept.append(executor)
        self.job["executors"] = kept

    def _load_secrets(self) -> dict[str, dict[str, str]]:
        name = self.path("secrets.json")
        try:
            with open(name, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        finally:
            if os.path.exists(name):
                os.unlink(name)
        return {str(name): {str(k): str(v) for k, v in env.items()} for name, env in data.items()}

    # status -------------------------------------------------------------------------

    def save(self, **changes) -> None:
        with self.lock:
            self.status.update(changes)
            self.status["updated_at"] = now()
            write_atomic(self.path("status.json"), self.redact(json.dumps(self.status, indent=1, sort_keys=True)))

    def finalise(self, state: str, error: str | None = None, exit_code: int | None = None) -> None:
        """The final status, with the runner's exit code (0 succeeded, 1 failed, 128+N killed by signal N)."""
        if self.status.get("final"):
            return
        ended = now()
        code = exit_code if exit_code is not None else (0 if state == "succeeded" else 1)
        self.save(usage=sum_usage(self.status.get("rounds") or []), state=state, exit_code=code,
                  error=self.redact(error) if error else None, ended_at=ended,
                  duration_s=round(ended - self.status["started_at"], 3), final=True)

    def heartbeat(self) -> None:
        while not self.status.get("final"):
            write_atomic(self.path("heartbeat"), f"{now():.3f}\n", 0o644)
            time.sleep(float(self.job.get("heartbeat_s") or HEARTBEAT_S))

    # the loop -------------------------------------------------------------------------

    def run(self) -> int:
        self.start()
        rounds_allowed = 1 + int(self.job.get("retries", 0))
        with open(self.path("prompt.md"), encoding="utf-8") as handle:
            prompt = handle.read()
        feedback: list[str] = []
        for round_no in range(1, rounds_allowed + 1):
            prompt_file = self.path(f"round-{round_no}.prompt.md")
            write_atomic(prompt_file, prompt + "".join(feedback), 0o600)
            executor, changes, problems = self.one_round(round_no, prompt_file)
            if not problems:
                return self.commit(executor, changes)
            feedback.append(self.feedback(round_no, problems))
        last = [p.splitlines()[0].rstrip(":") for p in self.status["rounds"][-1]["problems"]]
        raise RunnerError(f"not done after {rounds_allowed} round(s): " + "; ".join(last)[:1500])

    def start(self) -> None:
        """Heartbeat, pid file, the agent user, the workspace: everything before the first round."""
        threading.Thread(target=self.heartbeat, daemon=True).start()
        write_atomic(self.path("runner_pid"), f"{os.getpid()}\n", 0o644)
        self.save()
        try:
            self.agent = agents.AgentUser(self.job.get("agent_user"))
        except PermissionError as exc:
            raise InfrastructureError(str(exc)) from None
        self.save(agent_user=self.agent.name)
        self.prepare()

    def one_round(self, round_no: int, prompt_file: str) -> tuple[str, list[Change], list[str]]:
        """Agent, verify, gates; -> (the executor that answered, the changes, the round's problems)."""
        record: dict = {"round": round_no, "started_at": now()}
        self.status["rounds"].append(record)
        agent = self.run_agent(round_no, prompt_file)
        record.update(executor=agent["executor"], agent_exit=agent["exit"], tries=agent["tries"],
                      timed_out=agent["timed_out"])
        if agent.get("rate_limited"):
            problem = "every executor of the chain was rate limited: " + ", ".join(t["executor"] for t in agent["tries"])
            record.update(ended_at=now(), ok=False, problems=[problem])
            self.save()
            raise RunnerError(problem)
        problems, verify_output = self.agent_and_verify(round_no, agent, record)
        self.save(phase=f"gates round {round_no}")
        changes, gates = self.round_gates(round_no, verify_output if not problems else None)
        problems += [f"gate {g['gate']}: {g['detail']}" for g in gates if not g["ok"]]
        record.update(ended_at=now(), ok=not problems, problems=[p[:2000] for p in problems],
                      files_changed=[c.path for c in changes], gates={g["gate"]: g["ok"] for g in gates})
        self.save()
        return agent["executor"], changes, problems

    def agent_and_verify(self, round_no: int, agent: dict, record: dict) -> tuple[list[str], str | None]:
        """The agent's problems, or verify's when the agent ended well; -> (problems, verify output)."""
        if agent["timed_out"]:
            return [f"the agent ({agent['executor']}) timed out; its process group was killed"], None
        if agent["exit"] != 0:
            said = f" ({agent['error']})" if agent.get("error") else ""
            return [f"the agent ({agent['executor']}) exited with {agent['exit']}{said}:\n{agent['output_tail']}"], None
        rc, verify_output, timed_out = self.verify(round_no)
        record.update(verify_exit=rc, verify_timed_out=timed_out)
        if timed_out:
            return [f"verify timed out after {self.job.get('verify_timeout_s', 1200)} s"], verify_output
        if rc != 0:
            return [f"verify `{self.job['verify']}` failed with exit {rc}:\n{tail(verify_output)}"], verify_output
        return [], verify_output

    def round_gates(self, round_no: int, verify_output: str | None) -> tuple[list[Change], list[dict]]:
        """The gates of :mod:`gates` plus the secrets gate, redacted and saved as ``round-N.gates.json``."""
        job = self.job
        changes, added, leaked = self.diff()
        gates = run_gates(changes, added, job.get("modifies", []), job.get("test_paths", []),
                          verify_output, job.get("require_tests", True))
        gates.append({"gate": "secrets", "ok": not leaked, "problems": leaked,
                      "detail": ("the changes contain the value of " + ", ".join(leaked)) if leaked
                      else "no secret value in the changes"})
        gates = json.loads(self.redact(json.dumps(gates)))
        write_atomic(self.path(f"round-{round_no}.gates.json"), json.dumps(gates, indent=1), 0o644)
        return changes, gates

    def feedback(self, round_no: int, problems: list[str]) -> str:
        text = "\n\n".join(problems)
        if len(text) > FEEDBACK_BYTES:
            text = text[:FEEDBACK_BYTES // 2] + "\n[... cut ...]\n" + text[-FEEDBACK_BYTES // 2:]
        return (f"\n\n## Feedback from round {round_no} (specfleet)\n\nYour changes so far are still in the "
                f"workspace. They did not pass:\n\n```\n{self.redact(text)}\n```\n\nFix these problems; keep every "
                f"change inside `modifies`.\n")

    def commit(self, executor: str, changes: list[Change]) -> int:
        self.save(phase="commit", executor=executor)
        job = self.job
        message = (f"specfleet({job['project']}): {job['task_id']}: {job.get('title') or 'spec work'}\n\n"
                   f"Spec: {job['task_id']}\nAttempt: {job['attempt']} (run {job['run_id']})\n"
                   f"Executor: {executor}\nRounds: {len(self.status['rounds'])}\n")
        self.git("commit", "-q", "--no-verify", "-m", message)
        commit = self.git("rev-parse", "HEAD").strip()
        self.save(commit=commit, files_changed=[c.path for c in changes], phase="bring back")
        # Written by git as the agent user to its output, saved by the runner into its own folder.
        data = self.git("bundle", "create", "-q", "-", f"refs/heads/{job['branch']}", f"^{job['base']}", binary=True)
        with open(self.path("result.bundle"), "wb") as handle:
            handle.write(data)
        if job.get("remote_url"):
            self.push(self.path("result.bundle"), commit)
            self.save(pushed=True)
        else:
            self.save(bundle="result.bundle")
        self.finalise("succeeded")
        return 0


def finalize_after_exit(run_dir: str, exit_code: int, error: str | None = None) -> None:
    """Run by the job wrapper when the runner is gone: kill leftovers, remove what must not stay, finalise."""
    for name in os.listdir(run_dir):
        if name == "secrets.json" or name.endswith(".raw"):
            os.unlink(os.path.join(run_dir, name))
    try:
        with open(os.path.join(run_dir, "child_pgids"), encoding="utf-8") as handle:
            for line in handle:
                if line.strip().isdigit():
                    kill_group(int(line), grace=2)
    except FileNotFoundError:
        pass
    path = os.path.join(run_dir, "status.json")
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
    except (OSError, ValueError):
        status = {"phase": "starting", "rounds": []}
    if not isinstance(status, dict):
        status = {"phase": "starting", "rounds": []}
    if status.get("final"):
        return
    why = {124: "the attempt hit its time limit and was killed", 137: "the runner was killed (SIGKILL)",
           143: "the runner was terminated (SIGTERM)"}.get(exit_code, f"the runner ended with exit {exit_code}")
    stamp = now()
    status.update(usage=sum_usage(status.get("rounds") if isinstance(status.get("rounds"), list) else []),
                  state="killed" if exit_code in (124, 137, 143) else "failed", final=True, ended_at=stamp,
                  error=error or f"{why} during {status.get('phase', 'an unknown phase')}", updated_at=stamp,
                  exit_code=exit_code)
    write_atomic(path, json.dumps(status, indent=1, sort_keys=True))
