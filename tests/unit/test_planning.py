"""The planning stage against a real chat-completions server on loopback (scripted answers)."""
from __future__ import annotations

import json
import socket

import pytest

from specfleet.plan import chat as chatapi
from specfleet.plan import planning
from specfleet.validate.checks import validate_project
from tests.chat_server import completion

KEY = "sk-plan-canary-7f3a91"
DIRECTION = "Demo: greet users by name, reuse util, tests included, no new packages"


def spec(task_id, modifies, depends_on=(), estimate="10m", **extra):
    return {"task_id": task_id, "title": f"{task_id} work", "priority": 1, "depends_on": list(depends_on),
            "modifies": list(modifies), "estimate": estimate, "verify": "python3 -m pytest -q tests",
            "goal": f"Do {task_id} as the contract says.", "constraints": ["standard library only"],
            "acceptance": [f"{task_id}: pytest passes", "greet('Ann') == 'Hello, Ann'"],
            "do_not": ["touch files outside modifies"], **extra}


PLAN = {"summary": "Three steps.", "milestones": [{"name": "M1", "specs": ["S01-util"]}],
        "modules": [{"name": "util", "paths": ["src/util.py"], "owner": "S01-util"}],
        "contract": [{"name": "greet(name) -> str", "request": {"name": "Ann"}, "response": {"text": "Hello, Ann"}}],
        "risks": ["greeting format drift: the contract fixes it"]}


def good() -> list[dict]:
    return [spec("S01-util", ["src/util.py"]), spec("S02-app", ["src/app.py"], ["S01-util"]),
            spec("S03-tests", ["tests/test_app.py", "tests/test_greet.py"], ["S02-app"]),
            spec("S04-readme", ["README.md"])]


def answer(specs, plan=PLAN, fenced=False) -> tuple[int, dict]:
    text = json.dumps({"plan": plan, "specs": specs}, ensure_ascii=False)
    return completion(f"Here is the split:\n```json\n{text}\n```" if fenced else text)


def endpoint(server, timeout=10.0, retries=2) -> chatapi.Endpoint:
    return chatapi.Endpoint(server.url, "plan-model", KEY, timeout=timeout, retries=retries)


def make(projects, point, settings, **kw) -> planning.Plan:
    return planning.make_plan(point, projects.specs_root, "demo", DIRECTION, settings, default_executor="glm", **kw)


def every_file(root) -> str:
    return "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def test_a_good_split_lands_in_pending_with_its_plan_and_is_approved_into_the_project(projects, chat):
    projects.project("demo")
    server = chat(answer(good(), fenced=True))
    plan = make(projects, endpoint(server), planning.Settings())
    assert plan.rounds == 1 and plan.task_ids == ["S01-util", "S02-app", "S03-tests", "S04-readme"]
    written = planning.land(projects.specs_root, "demo", plan)
    pending = projects.specs_root / "demo" / "pending"
    assert {p.name for p in written} >= {"S01-util.md", "S04-readme.md"} and all(p.parent == pending for p in written)
    text = (pending / "S02-app.md").read_text()
    assert f"direction: '{DIRECTION}'" in text and "model: plan-model" in text and "## Acceptance criteria" in text
    document = next(pending.glob("_plan-*.md")).read_text()
    assert "```mermaid" in document and "n0 --> n1" in document and "## Shared contract" in document
    assert '"text": "Hello, Ann"' in document and "templates/plan/v1.md.j2" in document
    # The prompt carried the contract rules, the tree and the direction; the key only the header.
    request = server.requests[0]
    prompt = request["body"]["messages"][1]["content"]
    assert DIRECTION in prompt and "src/util.py" in prompt and "Explicit `modifies`" in prompt
    assert request["auth"] == f"Bearer {KEY}" and KEY not in json.dumps(request["body"])
    assert KEY not in every_file(projects.root)
    # Pending specs are not the project's until approved.
    assert validate_project(projects.specs_root, "demo").specs == {}
    assert planning.approve(projects.specs_root, "demo", "all", default_executor="glm") == plan.task_ids
    report = validate_project(projects.specs_root, "demo", default_executor="glm")
    assert report.ok and sorted(report.specs) == plan.task_ids
    assert [p.name for p in pending.iterdir()] == [next(pending.glob("_plan-*.md")).name]


def test_a_cycle_is_sent_back_with_the_exact_error_and_repaired_in_round_two(projects, chat):
    projects.project("demo")
    cyclic = good()
    cyclic[0]["depends_on"] = ["S03-tests"]
    server = chat(answer(cyclic), answer(good()))
    lines = []
    plan = planning.make_plan(endpoint(server), projects.specs_root, "demo", DIRECTION, planning.Settings(),
                              default_executor="glm", log=lines.append)
    assert plan.rounds == 2 and lines[0].startswith("round 1: ") and lines[1] == "round 2: valid"
    repair = server.requests[1]["body"]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert ("- specs/demo/S01-util.md: field 'depends_on': dependency cycle: "
            "S01-util -> S03-tests -> S02-app -> S01-util") in repair[3]["content"]


@pytest.mark.parametrize("broken,expected", [
    ([spec("S01-a", ["../etc/passwd"])], "would escape the repository"),
    ([spec("S01-a", ["src/app.py"]), spec("S02-b", ["src/app.py"])], "overlaps 'src/app.py' of S01-a"),
    ([spec("S01-a", ["src/app.py"], estimate="45m")], "45m is outside 5-15 minutes of agent work: split it"),
    ([spec("S01-a", ["src/app.py"], goal="TODO: decide later")], "contains the placeholder 'TODO'"),
    ([spec("S01-a", ["src/app.py"], depends_on=["S09-missing"])], "'S09-missing' is not a spec of project demo"),
    ([spec("../x", ["src/app.py"])], "specs[0].task_id: '../x' must be letters"),
    ([spec("S01-a", ["src/app.py"], owner="me")], "specs[0].owner: is not a spec field"),
])
def test_a_split_still_invalid_after_the_last_round_writes_nothing(projects, chat, broken, expected):
    projects.project("demo")
    server = chat(answer(broken), answer(broken))
    with pytest.raises(planning.PlanInvalid) as caught:
        make(projects, endpoint(server), planning.Settings(rounds=2))
    assert caught.value.rounds == 2 and any(expected in p for p in caught.value.problems), caught.value.problems
    assert len(server.requests) == 2
    assert sorted(p.name for p in (projects.specs_root / "demo").iterdir()) == ["project.yml"]


def test_a_429_and_a_timeout_are_retried_with_backoff(projects, chat):
    projects.project("demo")
    server = chat((429, "slow down"), ("slow", 3), answer(good()))
    plan = planning.make_plan(endpoint(server, timeout=1.0, retries=2), projects.specs_root, "demo", DIRECTION,
                              planning.Settings(), default_executor="glm")
    assert plan.rounds == 1 and len(server.requests) == 3


@pytest.mark.parametrize("answers,expected", [
    ([(503, "down"), (503, "down"), (503, "down")], "InternalServerError (HTTP 503) after 2 retries"),
    ([(200, {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": None,
                                                          "refusal": "I can't help with that"}}]})],
     "the model refused: I can't help with that"),
])
def test_an_unusable_endpoint_is_a_clear_error_and_nothing_is_written(projects, chat, answers, expected):
    projects.project("demo")
    server = chat(*answers)
    with pytest.raises(chatapi.ChatUnavailable, match=expected.replace("(", r"\(").replace(")", r"\)")):
        make(projects, endpoint(server), planning.Settings())
    assert not (projects.specs_root / "demo" / "pending").exists()


def test_an_endpoint_that_is_down_and_prose_answers_are_named(projects, chat):
    projects.project("demo")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = chatapi.Endpoint(f"http://127.0.0.1:{port}/v1", "m", KEY, timeout=2, retries=1)
    with pytest.raises(chatapi.ChatUnavailable, match="cannot connect"):
        planning.make_plan(down, projects.specs_root, "demo", DIRECTION, planning.Settings(), default_executor="glm")
    server = chat(completion("I would split it into a schema step and a router step."))
    with pytest.raises(planning.PlanInvalid, match="not one JSON object"):
        make(projects, endpoint(server), planning.Settings(rounds=1))


def test_landing_never_overwrites_and_approval_checks_the_whole_project(projects, chat):
    projects.project("demo")
    server = chat(answer(good()), answer(good()), answer([spec("S05-more", ["src/more.py"])]))
    plan = make(projects, endpoint(server), planning.Settings())
    pending = projects.specs_root / "demo" / "pending"
    pending.mkdir()
    (pending / "S03-tests.md").write_text("someone else's file\n")
    with pytest.raises(planning.PlanError, match="S03-tests.md exist already; nothing was written"):
        planning.land(projects.specs_root, "demo", plan)
    assert [p.name for p in pending.iterdir()] == ["S03-tests.md"]
    (pending / "S03-tests.md").unlink()
    planning.land(projects.specs_root, "demo", plan)
    # A second plan is told about the pending ids and picks new ones.
    again = make(projects, endpoint(server), planning.Settings())
    assert again.task_ids == ["S05-more"] and again.rounds == 2
    assert "pending/S01-util.md: a pending spec has that name" in server.requests[2]["body"]["messages"][3]["content"]
    with pytest.raises(planning.PlanError, match="not pending in specs/demo/pending/: S99"):
        planning.approve(projects.specs_root, "demo", ["S99"], default_executor="glm")
    # S02 depends on S01: approving it alone would leave the project with an unknown dependency.
    with pytest.raises(planning.PlanError, match="'S01-util' is not a spec of project demo"):
        planning.approve(projects.specs_root, "demo", ["S02-app"], default_executor="glm")
    assert not (projects.specs_root / "demo" / "S02-app.md").exists()


def test_direction_from_a_file_and_bad_directions(tmp_path):
    file = tmp_path / "2026-11-21.md"
    file.write_text("  ClawMarketing: batch scheduling, max 50  \n")
    assert planning.read_direction(None, str(file)) == "ClawMarketing: batch scheduling, max 50"
    with pytest.raises(planning.PlanError, match="cannot be read"):
        planning.read_direction(None, str(tmp_path / "missing.md"))
    with pytest.raises(planning.PlanError, match="no direction"):
        planning.read_direction("  ", None)
    with pytest.raises(planning.PlanError, match="not both"):
        planning.read_direction("x", str(file))


def test_names_the_validator_would_skip_and_paths_of_a_relative_repository_are_caught(projects, chat):
    folder = projects.project("demo", config="repository: ../../repo\nbase_branch: main\nverify: pytest -q\n")
    assert (folder / "../../repo").resolve() == projects.repo.resolve()
    reserved = spec("SHARED_CONTEXT", ["src/app.py"])
    nowhere = spec("S02-x", ["nowhere/deep/x.py"])
    server = chat(answer([reserved, nowhere]))
    with pytest.raises(planning.PlanInvalid) as caught:
        make(projects, endpoint(server), planning.Settings(rounds=1))
    text = "\n".join(caught.value.problems)
    assert "SHARED_CONTEXT.md: specfleet does not read this file name as a spec" in text
    assert "'nowhere/deep/x.py' points nowhere" in text


def test_ordinary_words_are_not_placeholders_and_the_real_answer_follows_an_example(projects, chat):
    projects.project("demo")
    todo = spec("S01-todo", ["src/todo.py"], title="A todo list page")
    example = json.dumps({"specs": []})
    real = json.dumps({"plan": PLAN, "specs": [todo]})
    server = chat(completion(f"For example:\n```json\n{example}\n```\nThe split:\n```json\n{real}\n```"))
    plan = planning.make_plan(endpoint(server), projects.specs_root, "demo", "Build a todo list page, TODO-free",
                              planning.Settings(), default_executor="glm")
    assert plan.task_ids == ["S01-todo"] and plan.rounds == 1


def test_the_key_variable_must_be_a_name_and_is_never_echoed():
    with pytest.raises(ValueError, match="must be the \\*name\\* of the variable") as caught:
        chatapi.Endpoint.from_vars({"base_url": "http://x", "model": "m", "api_key_var": KEY}, {}.get, "e")
    assert KEY not in str(caught.value)
    with pytest.raises(ValueError, match="variable vault_k \\(the API key\\) is not set"):
        chatapi.Endpoint.from_vars({"base_url": "http://x", "model": "m", "api_key_var": "vault_k"}, {}.get, "e")
