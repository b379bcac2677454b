# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Split a markdown file into YAML front matter and body, keeping line numbers for messages.

The front matter is the block between a first line ``---`` and the next line that is
exactly ``---`` (or ``...``). A ``---`` anywhere else, e.g. inside a YAML value or the
body, is just text (the original split on the first two occurrences of the substring).
Duplicate keys are an error, not a silent "last one wins".

Front matter is small, hand-written data, so the loader refuses what only an attacker
needs, before anything is built from the text:

* YAML aliases (``*name``) are refused outright, anchors are allowed but useless. An alias
  costs nothing to parse but is expanded by everything that walks the value afterwards
  (schema checks, messages, hashing): nine lines of nested aliases ("billion laughs")
  held validation for minutes at gigabytes. Specs never need them.
* Nesting deeper than :data:`MAX_DEPTH` levels is refused (building a 1,000-deep list
  recurses in Python; libyaml itself stops at 1,000), and so is a list or mapping of more
  than :data:`MAX_ITEMS` entries: the scan stops there, so a 256 KB list of 100,000
  entries costs milliseconds instead of a second of building Python objects.
* A UTF-8 byte order mark at the start is accepted and dropped (some Windows editors
  write one); anywhere else it is just a character.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml

BOM = "\ufeff"
# Levels of lists and mappings inside the front matter mapping: a spec needs two
# (``depends_on: [S01]``); project.yml a few more at most.
MAX_DEPTH = 16
# Entries in one list (keys in one mapping): a spec lists a few paths and dependencies.
MAX_ITEMS = 1000


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


def _guarded(tag: str):
    """A constructor for ``tag`` whose ValueError (a 5,000-digit int, month 13) is a marked YAML error."""
    construct = yaml.SafeLoader.yaml_constructors[tag]

    def guarded(loader, node):
        try:
            return construct(loader, node)
        except (ValueError, OverflowError) as exc:
            shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown!r} as {tag.rsplit(':', 1)[-1]} ({str(exc).split(';')[0]})",
                node.start_mark) from exc
    return guarded


for _tag in ("int", "float", "timestamp"):
    _StrictLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _guarded(f"tag:yaml.org,2002:{_tag}"))


@dataclass
class Document:
    data: dict
    body: str
    body_line: int  # 1-based line where the body starts
    key_lines: dict[str, int] = field(default_factory=dict)  # 1-based line of each top-level key


def strip_bom(text: str) -> str:
    """``text`` without a leading UTF-8 byte order mark."""
    return text[1:] if text.startswith(BOM) else text


def has_front_matter(text: str) -> bool:
    text = strip_bom(text)
    return text.startswith("---\n") or text.startswith("---\r\n") or text.strip() == "---"


def _yaml_error(exc: yaml.YAMLError, first_line: int, key: str | None = None) -> FrontMatterError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = first_line + mark.line if mark is not None else None
        context = f" {exc.context}" if exc.context else ""
        return FrontMatterError(f"YAML error: {exc.problem or exc}{context}", line, key)
    return FrontMatterError(f"YAML error: {exc}", first_line, key)


def _refuse_aliases_and_depth(text: str, first_line: int) -> None:
    """Scan the YAML events (cheap, nothing is built) for aliases and excessive nesting.

    The top-level key being read is tracked so the error names the field: at depth 1
    (inside the front matter mapping) events alternate between a key and its value.
    """
    scanner = _BaseLoader(text)
    depth = 0
    key: str | None = None
    expect_key = False
    counts: list[int] = []  # entries so far in each open collection (a mapping counts keys and values)
    try:
        while scanner.check_event():
            event = scanner.get_event()
            if counts and isinstance(event, yaml.NodeEvent):
                counts[-1] += 1
                if counts[-1] > MAX_ITEMS * (2 if depth == 1 else 1):
                    raise FrontMatterError(f"lists more than {MAX_ITEMS} entries; a spec this large is several specs",
                                           first_line + event.start_mark.line,
                                           key if depth > 1 else None)
            if isinstance(event, yaml.AliasEvent):
                raise FrontMatterError(
                    f"uses the YAML alias '*{event.anchor}'; aliases are not allowed in front matter "
                    "(write the value out)", first_line + event.start_mark.line, key)
            if isinstance(event, yaml.ScalarEvent) and depth == 1:
                if expect_key:
                    key = event.value[:64]
                expect_key = not expect_key
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                expect_key = True  # at depth 0 the front matter itself; at depth 1 a value (then a key)
                depth += 1
                counts.append(0)
                if depth > MAX_DEPTH + 1:  # + 1: the front matter mapping itself
                    raise FrontMatterError(f"nests lists or mappings more than {MAX_DEPTH} levels deep",
                                           first_line + event.start_mark.line, key)
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
                counts.pop()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, first_line, key) from exc
    finally:
        scanner.dispose()


def load_yaml_mapping(text: str, first_line: int = 1) -> tuple[dict, dict[str, int]]:
    """Parse ``text`` as one YAML mapping; line numbers are offset so ``first_line`` is line 1."""
    loader = _StrictLoader(text)
    loader.first_line = first_line
    key_lines: dict[str, int] = {}
    try:
        _refuse_aliases_and_depth(text, first_line)
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        if not isinstance(node, yaml.MappingNode):
            raise FrontMatterError("must be a YAML mapping of key: value lines", first_line + node.start_mark.line)
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key_lines[str(key_node.value)] = first_line + key_node.start_mark.line
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        error = _yaml_error(exc, first_line)
        if error.line is not None:  # name the field whose value failed (e.g. an unknown !!tag)
            error.key = max(((line, key) for key, line in key_lines.items() if line <= error.line),
                            default=(0, None))[1]
        raise error from exc
    finally:
        loader.dispose()
    return data, key_lines


def split(text: str) -> Document:
    """Return the parsed front matter and the body of a spec file's ``text``."""
    text = strip_bom(text)
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
