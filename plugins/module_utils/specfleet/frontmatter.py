# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Split a markdown file into YAML front matter and body, keeping line numbers for messages.

The front matter is the block between a first line ``---`` and the next line that is
exactly ``---`` (or ``...``). A ``---`` anywhere else, e.g. inside a YAML value or the
body, is just text (the original split on the first two occurrences of the substring).
Duplicate keys are an error, not a silent "last one wins".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml


class FrontMatterError(ValueError):
    def __init__(self, message: str, line: int | None = None, key: str | None = None):
        super().__init__(message)
        self.line = line
        self.key = key


# libyaml's parser is ~10x faster than the pure-Python one; same safe constructors.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    offset = getattr(loader, "first_line", 1)
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError as exc:
            raise FrontMatterError("a mapping key must be a plain value", offset + key_node.start_mark.line) from exc
        if key in seen:
            raise FrontMatterError(
                f"duplicate key {key!r} (first on line {offset + seen[key]})",
                offset + key_node.start_mark.line, str(key))
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass
class Document:
    data: dict
    body: str
    body_line: int  # 1-based line where the body starts
    key_lines: dict[str, int] = field(default_factory=dict)  # 1-based line of each top-level key


def has_front_matter(text: str) -> bool:
    return text.startswith("---\n") or text.startswith("---\r\n") or text.strip() == "---"


def load_yaml_mapping(text: str, first_line: int = 1) -> tuple[dict, dict[str, int]]:
    """Parse ``text`` as one YAML mapping; line numbers are offset so ``first_line`` is line 1."""
    loader = _StrictLoader(text)
    loader.first_line = first_line
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        if not isinstance(node, yaml.MappingNode):
            raise FrontMatterError("must be a YAML mapping of key: value lines", first_line + node.start_mark.line)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = first_line + mark.line if mark is not None else None
        problem = exc.problem or str(exc)
        context = f" {exc.context}" if exc.context else ""
        raise FrontMatterError(f"YAML error: {problem}{context}", line) from exc
    except yaml.YAMLError as exc:
        raise FrontMatterError(f"YAML error: {exc}", first_line) from exc
    finally:
        loader.dispose()
    key_lines = {}
    for key_node, _value in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key_lines[str(key_node.value)] = first_line + key_node.start_mark.line
    return data, key_lines


def split(text: str) -> Document:
    """Return the parsed front matter and the body of a spec file's ``text``."""
    if "\x00" in text:
        raise FrontMatterError("contains NUL bytes; a spec is a UTF-8 text file", 1)
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n") != "---":
        raise FrontMatterError("does not start with a '---' line opening the YAML front matter", 1)
    for index in range(1, len(lines)):
        if lines[index].rstrip("\r\n") in ("---", "..."):
            yaml_text = "".join(lines[1:index])
            data, key_lines = load_yaml_mapping(yaml_text, first_line=2)
            return Document(data, "".join(lines[index + 1:]), index + 2, key_lines)
    raise FrontMatterError("front matter is never closed; add a '---' line after it", 1)
