# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SpecGraph: the dependency DAG of one project.

Edges point from a spec to what it depends on (``S03 -> S01`` reads "S03 depends on
S01"), which is also how cycles are printed. All walks are iterative: a 1,000-spec chain
must not hit Python's recursion limit.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping


class CycleError(ValueError):
    def __init__(self, cycles: list[list[str]]):
        super().__init__("; ".join(" -> ".join(c) for c in cycles))
        self.cycles = cycles


class SpecGraph:
    def __init__(self, depends_on: Mapping[str, Iterable[str]], estimates: Mapping[str, int] | None = None):
        self.nodes: list[str] = sorted(depends_on)
        known = set(self.nodes)
        self.deps: dict[str, tuple[str, ...]] = {n: tuple(sorted(set(depends_on[n]))) for n in self.nodes}
        self.unknown: dict[str, list[str]] = {
            n: [d for d in self.deps[n] if d not in known] for n in self.nodes}
        self.unknown = {n: d for n, d in self.unknown.items() if d}
        self.dependents: dict[str, list[str]] = {n: [] for n in self.nodes}
        for node in self.nodes:
            for dep in self.deps[node]:
                if dep in known:
                    self.dependents[dep].append(node)
        self.estimates = dict(estimates or {})

    def _known_deps(self, node: str) -> list[str]:
        return [d for d in self.deps[node] if d in self.dependents]

    def strongly_connected(self) -> list[list[str]]:
        """Tarjan's algorithm, iterative; components in discovery order, members sorted."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        on_stack: set[str] = set()
        stack: list[str] = []
        components: list[list[str]] = []
        counter = 0
        for root in self.nodes:
            if root in index:
                continue
            work = [(root, iter(self._known_deps(root)))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                node, children = work[-1]
                advanced = False
                for child in children:
                    if child not in index:
                        index[child] = low[child] = counter
                        counter += 1
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, iter(self._known_deps(child))))
                        advanced = True
                        break
                    if child in on_stack:
                        low[node] = min(low[node], index[child])
                if advanced:
                    continue
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
        return components

    def cycles(self) -> list[list[str]]:
        """One closed path per cyclic component, e.g. ``['S01', 'S03', 'S01']``.

        The path is the shortest cycle through the component's first member (BFS within
        the component), so the message names as few specs as possible.
        """
        found = []
        for component in self.strongly_connected():
            members = set(component)
            start = component[0]
            if len(component) == 1 and start not in self.deps[start]:
                continue
            parent: dict[str, str] = {}
            queue = deque([start])
            end = None
            while queue and end is None:
                node = queue.popleft()
                for dep in self._known_deps(node):
                    if dep not in members:
                        continue
                    if dep == start:
                        end = node
                        break
                    if dep not in parent:
                        parent[dep] = node
                        queue.append(dep)
            path = [end]
            while path[-1] != start:
                path.append(parent[path[-1]])
            path.reverse()
            found.append(path + [start])
        return found

    def topological_order(self) -> list[str]:
        """Dependencies before dependents; ties by task id. Raises :class:`CycleError`."""
        cycles = self.cycles()
        if cycles:
            raise CycleError(cycles)
        pending = {n: len(self._known_deps(n)) for n in self.nodes}
        ready = deque(sorted(n for n, count in pending.items() if count == 0))
        order = []
        while ready:
            node = ready.popleft()
            order.append(node)
            for child in sorted(self.dependents[node]):
                pending[child] -= 1
                if pending[child] == 0:
                    ready.append(child)
        return order

    def descendants(self, node: str) -> set[str]:
        """Every spec that transitively depends on ``node`` (what a failure blocks)."""
        seen: set[str] = set()
        queue = deque(self.dependents.get(node, ()))
        while queue:
            child = queue.popleft()
            if child not in seen:
                seen.add(child)
                queue.extend(self.dependents[child])
        return seen

    def ancestors(self, node: str) -> set[str]:
        seen: set[str] = set()
        queue = deque(self._known_deps(node))
        while queue:
            dep = queue.popleft()
            if dep not in seen:
                seen.add(dep)
                queue.extend(self._known_deps(dep))
        return seen

    def remaining_path(self) -> dict[str, int]:
        """For each spec: its estimate plus the longest estimate-weighted chain of dependents.

        This is the critical-path rank the scheduler orders ready specs by: starting the
        spec with the longest tail first shortens the makespan.
        """
        rank: dict[str, int] = {}
        for node in reversed(self.topological_order()):
            tail = max((rank[c] for c in self.dependents[node]), default=0)
            rank[node] = self.estimates.get(node, 0) + tail
        return rank

    def critical_path_length(self) -> int:
        return max(self.remaining_path().values(), default=0)
