from __future__ import annotations

import pytest

from specfleet.model.graph import CycleError, SpecGraph

SEEDS = {  # the seeds' split: S03 needs S01+S02, S04 needs S01, ...
    "S01": [], "S02": [], "S03": ["S01", "S02"], "S04": ["S01"], "S05": ["S01"],
    "S06": ["S02"], "S07": ["S03"], "S08": ["S03", "S04"],
}
MINUTES = {"S01": 5, "S02": 10, "S03": 10, "S04": 5, "S05": 3, "S06": 5, "S07": 5, "S08": 5}


def test_topological_order_puts_dependencies_first():
    order = SpecGraph(SEEDS).topological_order()
    assert order == ["S01", "S02", "S04", "S05", "S03", "S06", "S07", "S08"]
    for node, deps in SEEDS.items():
        assert all(order.index(d) < order.index(node) for d in deps)


def test_descendants_are_what_a_failure_blocks():
    graph = SpecGraph(SEEDS)
    assert graph.descendants("S01") == {"S03", "S04", "S05", "S07", "S08"}
    assert graph.descendants("S07") == set()
    assert graph.ancestors("S08") == {"S01", "S02", "S03", "S04"}


def test_remaining_path_is_the_critical_path_rank():
    graph = SpecGraph(SEEDS, MINUTES)
    rank = graph.remaining_path()
    assert rank["S02"] == 10 + 10 + 5  # S02 -> S03 -> S07/S08
    assert rank["S01"] == 5 + 10 + 5
    assert graph.critical_path_length() == 25


@pytest.mark.parametrize(("deps", "cycles"), [
    ({"a": ["a"]}, [["a", "a"]]),
    ({"a": ["b"], "b": ["a"]}, [["a", "b", "a"]]),
    ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [["a", "b", "c", "a"]]),
    ({"a": ["b", "c"], "b": ["c"], "c": ["a"]}, [["a", "c", "a"]]),  # the shortest cycle through a
    ({"a": ["b"], "b": ["a"], "x": ["y"], "y": ["x"]}, [["a", "b", "a"], ["x", "y", "x"]]),
    ({"a": [], "b": ["a"]}, []),
])
def test_cycles_are_closed_paths(deps, cycles):
    graph = SpecGraph(deps)
    assert sorted(graph.cycles()) == cycles
    if cycles:
        with pytest.raises(CycleError):
            graph.topological_order()


def test_unknown_dependencies_are_listed_and_ignored_for_order():
    graph = SpecGraph({"a": ["ghost"], "b": ["a"]})
    assert graph.unknown == {"a": ["ghost"]}
    assert graph.topological_order() == ["a", "b"]


def test_deep_chains_do_not_recurse():
    chain = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(5000)}
    chain["n0"] = ["n4999"]
    graph = SpecGraph(chain)
    assert len(graph.cycles()[0]) == 5001
