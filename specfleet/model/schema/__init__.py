# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The JSON Schema files for specs and project.yml, and their errors as :class:`Problem` s."""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from ..problems import Problem

SCHEMA_DIR = Path(__file__).resolve().parent


@cache
def load_schema(name: str) -> dict[str, Any]:
    """``spec`` or ``project``: the schema shipped as ``<name>.schema.json`` beside this file."""
    with open(SCHEMA_DIR / f"{name}.schema.json", encoding="utf-8") as handle:
        return json.load(handle)


@cache
def _validator(name: str):
    import jsonschema  # imported late so a missing package is one clear error, not an import crash

    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def schema_problems(schema: dict[str, Any], data: dict[str, Any], path: str,
                    line_of: Callable[[str], int | None]) -> list[Problem]:
    """Validate ``data`` against ``schema`` (by its ``$id``) and explain each error in the user's terms.

    The hint is the property's ``description`` in the schema, so the schema file is the
    one place that says what a right value looks like.
    """
    name = schema["$id"].split("/")[-1].split(".")[0]
    problems = []
    for error in sorted(_validator(name).iter_errors(data), key=lambda e: list(map(str, e.path))):
        if error.validator == "required":
            key = error.message.split("'")[1]
            prop = schema["properties"].get(key, {})
            problems.append(Problem(path, None, key, "is required", prop.get("description", "")))
            continue
        key = str(error.path[0]) if error.path else None
        prop = schema["properties"].get(key, {}) if key else {}
        hint = prop.get("description", "")
        where = f" entry {_describe(error.instance)}" if len(error.path) > 1 else ""
        if error.validator == "type":
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            message = f"{where.strip() or 'value'} must be of type {expected}, not {_describe(error.instance)}"
        elif error.validator == "pattern":
            message = f"{_describe(error.instance)} has characters or a length that are not allowed"
        elif error.validator == "minItems":
            message = "must not be empty"
        elif error.validator == "uniqueItems":
            message = "lists the same entry twice"
        elif error.validator in ("minimum", "maximum"):
            message = f"{_describe(error.instance)} is out of range"
        elif error.validator == "minLength":
            message = "must not be empty"
        else:
            message = error.message
        problems.append(Problem(path, line_of(key) if key else None, key, message.strip(), hint))
    return problems
