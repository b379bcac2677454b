# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One agent round through the executor chain, the verify command, and the attempt's time budget.

Executors are tried in the chain's order: one that is rate limited hands the round to the
next after a backoff (``backoff_s``, doubling along the chain); any other ending, good or
bad, is the round's. A ``replay`` executor applies a recorded session instead of a model.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

try:  # inside the controller's package
    from .executor import Executor
    from .runfiles import RunnerError, now, tail, write_atomic
except ImportError:  # copied next to this file on a node
    from executor import Executor  # type: ignore[no-redef]
    from runfiles import RunnerError, now, tail, write_atomic  # type: ignore[no-redef]


class AgentRounds:
    """The agent half of :class:`attempt.Attempt` (uses its processes, git environment, job and secrets)."""

    def agent_env(self, executor: Executor, home: str) -> dict:
        env = self.clean_env(home)
        env.update({str(k): str(v) for k, v in executor.env.items()})
        env.update(executor.dialect.setup(executor.settings, home, self.workspace))
        env.update(self.secrets.get(executor.name, {}))
        return env

    def run_agent(self, round_no: int, prompt_file: str) -> dict:
        """One agent round through the executor chain; a rate limit moves to the fallback.

        Each try records the executor, its exit, whether it timed out or was rate limited
        (and the line that said so), its usage, and its log.
        """
        chain = [Executor.from_dict(e) for e in self.job["executors"]]
        with open(prompt_file, encoding="utf-8") as handle:
            prompt_text = handle.read()
        tries = []
        for index, executor in enumerate(chain):
            self.save(phase=f"agent round {round_no}", executor_trying=executor.name)
            log = f"round-{round_no}.agent.{index + 1}-{executor.name}.log"
            started = time.monotonic()
            rc, output, timed_out, said = self.try_executor(executor, log, prompt_file, prompt_text)
            limited = bool(said.get("rate_limited"))
            tries.append({"executor": executor.name, "cli": executor.cli, "model": executor.model, "exit": rc,
                          "timed_out": timed_out, "rate_limited": limited, "error": said.get("error"),
                          "usage": said.get("usage"), "seconds": round(time.monotonic() - started, 1), "log": log})
            self.save()
            end = tail(output)
            if not limited:
                return {"executor": executor.name, "exit": rc, "timed_out": timed_out, "tries": tries,
                        "output_tail": end, "error": said.get("error")}
            if index + 1 < len(chain):
                delay = executor.backoff_s * (2 ** index)
                self.save(phase=f"agent round {round_no}: {executor.name} rate limited, {chain[index + 1].name} in "
                                f"{delay:g} s")
                time.sleep(delay)
        return {"executor": chain[-1].name, "exit": tries[-1]["exit"], "timed_out": False, "tries": tries,
                "rate_limited": True, "output_tail": ""}

    def try_executor(self, executor: Executor, log: str, prompt_file: str,
                     prompt_text: str) -> tuple[int, str, bool, dict]:
        """One executor's run in its private HOME; -> (rc, output, timed_out, what the CLI said)."""
        said: dict = {"usage": None, "rate_limited": False, "error": None}
        if executor.kind == "replay":
            rc, output, timed_out = self.replay(log)
            return rc, output, timed_out, said
        home = self.home(f"home-{executor.name}")
        agent_prompt = os.path.join(home, "prompt.md")
        write_atomic(agent_prompt, prompt_text, 0o600)
        try:
            env = self.agent_env(executor, home)
            self.agent.own(home)      # the CLI's config files, written by the dialect, are its own
            rc, output, timed_out, stopped = self.run_process(
                executor.argv(prompt_text, agent_prompt), log, self.budget(executor.timeout_s),
                stdin_path=prompt_file if executor.prompt_mode == "stdin" else None, env=env, watch=executor)
        except (OSError, ValueError) as exc:
            rc, output, timed_out, stopped = 127, f"cannot run {executor.argv('', '')[:1]}: {exc}", False, None
            write_atomic(self.path(log), output + "\n", 0o644)
        said = executor.read(output, rc, timed_out)
        if stopped:
            said.update(rate_limited=True, error=said.get("error") or stopped)
        return rc, output, timed_out, said

    def replay(self, log: str) -> tuple[int, str, bool]:
        """The ``replay`` executor: apply a recorded session's changes (no model involved)."""
        patch = self.path("recording.patch")
        if not os.path.exists(patch):
            output = "replay: no recording was shipped for this spec"
            rc = 2
        else:
            with open(patch, encoding="utf-8") as handle:
                recorded = handle.read()
            # As the agent user (it owns the workspace), the patch on standard input.
            first = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], cwd=self.workspace, input=recorded,
                                   capture_output=True, text=True, preexec_fn=self.agent.preexec(), env=self.git_env())
            if first.returncode == 0:
                rc, output = 0, "replay: applied the recorded changes"
            else:
                second = subprocess.run(["git", "apply", "--3way", "--whitespace=nowarn", "-"], cwd=self.workspace,
                                        input=recorded, capture_output=True, text=True,
                                        preexec_fn=self.agent.preexec(), env=self.git_env())
                rc = second.returncode
                output = ("replay: applied the recorded changes with a three-way merge" if rc == 0 else
                          "replay: the recorded changes do not apply here:\n" + first.stderr + second.stderr)
        write_atomic(self.path(log), f"[replay executor: recorded changes, no model ran]\n{output}\n", 0o644)
        return rc, output, False

    def verify(self, round_no: int) -> tuple[int, str, bool]:
        self.save(phase=f"verify round {round_no}")
        # Python caches bytecode by source mtime in whole seconds and size: a file the agent
        # rewrote within the second, same length (a - b -> b + a), would run the old code.
        for folder, dirs, _files in os.walk(self.workspace):
            dirs[:] = [d for d in dirs if d != ".git"]
            if "__pycache__" in dirs:
                shutil.rmtree(os.path.join(folder, "__pycache__"), ignore_errors=True)
                dirs.remove("__pycache__")
        env = dict(self.clean_env(self.home("home-verify")), PYTHONDONTWRITEBYTECODE="1")
        rc, output, timed_out, _ = self.run_process(["/bin/sh", "-c", self.job["verify"]], f"round-{round_no}.verify.log",
                                                    self.budget(float(self.job.get("verify_timeout_s", 1200))), env=env)
        return rc, output, timed_out

    def budget(self, limit: float) -> float:
        """``limit``, cut to what is left of the attempt's time (minus a reserve for gates and commit).

        The job wrapper kills everything at the attempt's timeout; giving each run only the
        time left means a slow round ends as a timed-out round, with its patch and feedback.
        """
        total = float(self.job.get("attempt_timeout_s") or 0)
        if not total:
            return limit
        left = self.status["started_at"] + total - min(60.0, total / 10) - now()
        if left <= 1:
            raise RunnerError(f"the attempt's time limit ({total:g} s) is used up")
        return min(limit, left)
