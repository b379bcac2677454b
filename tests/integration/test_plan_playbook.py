"""playbooks/plan.yml run by ansible-playbook against a chat-completions server on loopback."""
from __future__ import annotations

import json

from tests.chat_server import completion
from tests.unit.test_planning import DIRECTION, PLAN, good, spec

KEY = "sk-plan-playbook-canary-0e41"


def vars_file(tmp_path, server, **more) -> str:
    data = {"specfleet_plan_endpoint": {"base_url": server.url, "model": "plan-model", "api_key_var": "vault_plan_key",
                                        "timeout": 10, "retries": 1},
            "vault_plan_key": KEY, "specfleet_default_executor": "glm", **more}
    path = tmp_path / "vault" / "vars.json"  # the vault stand-in: the one place the key may be
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return "@" + str(path)


def test_plan_then_approve_through_the_playbook_and_the_key_stays_secret(controller, projects, chat, tmp_path):
    projects.project("demo")
    server = chat(completion(json.dumps({"plan": PLAN, "specs": good()})))
    direction = tmp_path / "2026-11-21.md"
    direction.write_text(DIRECTION + "\n")
    common = ("-e", "project=demo", "-e", f"specfleet_specs_root={projects.specs_root}", "-e", vars_file(tmp_path, server))
    run = controller.playbook("playbooks/plan.yml", "-vv", *common, "-e", f"direction_file={direction}")
    assert run.returncode == 0, run.output[-3000:]
    assert "demo: 4 valid specs after 1 round(s)" in run.output and KEY not in run.output
    pending = projects.specs_root / "demo" / "pending"
    assert sorted(p.name for p in pending.glob("S*.md")) == ["S01-util.md", "S02-app.md", "S03-tests.md",
                                                            "S04-readme.md"]
    assert server.requests[0]["auth"] == f"Bearer {KEY}"
    approved = controller.playbook("playbooks/plan.yml", *common, "-e", "approve=S01-util,S04-readme")
    assert approved.returncode == 0, approved.output[-3000:]
    assert (projects.specs_root / "demo" / "S04-readme.md").is_file() and (pending / "S02-app.md").is_file()
    every = "".join(p.read_text(errors="replace") for folder in (projects.specs_root, projects.repo, controller.home)
                    for p in folder.rglob("*") if p.is_file())
    assert len(every) > 1000 and KEY not in every


def test_a_split_invalid_after_every_round_fails_the_playbook_and_writes_nothing(controller, projects, chat, tmp_path):
    projects.project("demo")
    bad = json.dumps({"plan": PLAN, "specs": [spec("S01-a", ["/etc/passwd"])]})
    server = chat(completion(bad), completion(bad))
    run = controller.playbook("playbooks/plan.yml", "-e", "project=demo", "-e", f"specfleet_specs_root={projects.specs_root}",
                              "-e", vars_file(tmp_path, server), "-e", f"direction='{DIRECTION}'", "-e", "plan_rounds=2")
    assert run.returncode == 2
    assert "still invalid after 2 round(s)" in run.output and "is absolute" in run.output
    assert "nothing was written" in run.output and KEY not in run.output
    assert sorted(p.name for p in (projects.specs_root / "demo").iterdir()) == ["project.yml"]


def test_no_endpoint_and_no_direction_are_named(controller, projects, tmp_path):
    projects.project("demo")
    run = controller.playbook("playbooks/plan.yml", "-e", "project=demo", "-e", f"specfleet_specs_root={projects.specs_root}",
                              "-e", "direction=x")
    assert run.returncode == 2 and "specfleet_plan_endpoint is not set in the inventory" in run.output
