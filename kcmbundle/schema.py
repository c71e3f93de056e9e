"""Validate a config document against the JSON Schema and phrase each error for an operator.

jsonschema's own messages name the failing keyword. These name the field,
show its value and give the fix.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import cache
from typing import Any

from kcmbundle.errors import NO_VALUE, Problem, format_path
from kcmbundle.resources import schema_path

_DNS_LABEL_HINT = (
    "Use a DNS label: lowercase letters, digits and '-', at most 63 characters, "
    "starting and ending with a letter or digit, such as k8s-master1"
)

# Fixes for the schema's patterns, so that an error does not show a regex.
_PATTERN_FIXES = {
    "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$": _DNS_LABEL_HINT,
    "^v?1\\.[0-9]+(\\.[0-9]+)?$": "Use a Kubernetes version such as 1.30, 1.30.4 or v1.30.4",
    "^[A-Z]{2}$": "Use a two-letter ISO 3166 country code in capitals, such as CN or DE",
    "^[A-Za-z_][A-Za-z0-9_]*$": "Use an environment variable name such as KCM_CA_PASSPHRASE",
    "^[a-z0-9][a-z0-9-]*$": "Write the flag name without leading dashes or '=', such as kube-api-qps",
}

_JSON_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


@cache
def load_schema() -> dict[str, Any]:
    """Return the config JSON Schema that this install ships."""
    with schema_path().open(encoding="utf-8") as stream:
        return json.load(stream)


def schema_text() -> str:
    """Return the JSON Schema file's text as shipped."""
    return schema_path().read_text(encoding="utf-8")


def validate(document: Any) -> list[Problem]:
    """Return one ``Problem`` per schema violation in ``document``, sorted by path."""
    validator = _validator_class()(load_schema())
    problems = []
    for error in validator.iter_errors(document):
        if error.validator == "additionalProperties":
            problems += _unknown_properties(error, list(error.absolute_path))
        else:
            problems.append(_to_problem(error))
    return sorted(problems, key=lambda problem: problem.path)


@cache
def _validator_class() -> Any:
    """Return a Draft 2020-12 validator whose ``pattern`` keyword anchors ``$`` as ECMAScript does.

    JSON Schema patterns are ECMAScript regular expressions, where ``$``
    matches only at the end of the string. jsonschema uses Python's ``re``,
    where ``$`` also matches before a final newline, so ``"CN\\n"`` would pass
    ``^[A-Z]{2}$`` and reach code that trusts the schema.
    """
    from jsonschema import Draft202012Validator, ValidationError, validators

    def pattern(validator: Any, expected: str, instance: Any, schema: dict[str, Any]) -> Any:
        if validator.is_type(instance, "string") and not re.search(_ecmascript_end(expected), instance):
            yield ValidationError(f"{instance!r} does not match {expected!r}")

    # JSON Schema counts 6443.0 as an integer, but the value is written into
    # URLs and flags as text, where "6443.0" is not a port.
    def is_integer(checker: Any, instance: Any) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    type_checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_integer)
    return validators.extend(Draft202012Validator, {"pattern": pattern}, type_checker=type_checker)


def _ecmascript_end(pattern: str) -> str:
    # A final unescaped "$" becomes "\Z", which matches only at the very end in Python.
    return re.sub(r"(?<!\\)\$$", r"\\Z", pattern)


def _to_problem(error: Any) -> Problem:
    path = list(error.absolute_path)
    keyword = error.validator
    expected = error.validator_value

    if keyword == "required":
        name = _missing_property(error)
        return Problem(
            format_path(path + [name]),
            "missing required field",
            _describe_property(error.schema, name),
        )

    if keyword == "propertyNames":
        return Problem(format_path(path), "invalid name", _PATTERN_FIXES.get(
            error.schema.get("propertyNames", {}).get("pattern", ""), "Rename it"), error.instance)

    if keyword == "pattern" and error.schema_path and "propertyNames" in error.schema_path:
        return Problem(format_path(path + [error.instance]), "invalid name",
                       _PATTERN_FIXES.get(expected, "Rename it"), error.instance)

    value = error.instance
    where = format_path(path)
    if keyword == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        names = " or ".join(_JSON_TYPES.get(name, name) for name in wanted)
        return Problem(where, "invalid type", f"Use {names}", value)
    if keyword == "enum":
        choices = ", ".join(json.dumps(choice) for choice in expected)
        return Problem(where, "invalid value", f"Use one of {choices}", value)
    if keyword == "pattern":
        return Problem(where, "invalid value", _PATTERN_FIXES.get(expected, f"Match {expected}"), value)
    if keyword == "minLength":
        return Problem(where, "must not be empty", "Give a value or remove the field", value)
    if keyword == "maxLength":
        return Problem(where, f"longer than {expected} characters", "Shorten it", value)
    if keyword == "minItems":
        return Problem(where, f"needs at least {expected} item(s)", "Add an entry", value)
    if keyword == "minimum":
        return Problem(where, f"less than the minimum {expected}", f"Use {expected} or more", value)
    if keyword == "maximum":
        return Problem(where, f"greater than the maximum {expected}", f"Use {expected} or less", value)
    if keyword == "uniqueItems":
        return Problem(where, "contains duplicates", "List each entry once", value)
    return Problem(where, f"invalid: {error.message}", "Correct the value", value)


def _missing_property(error: Any) -> str:
    # jsonschema reports one error per missing name; its message starts with the name's repr.
    for name in error.validator_value:
        if isinstance(error.instance, dict) and name not in error.instance:
            if error.message.startswith(repr(name)):
                return name
    return str(error.message.split(" ", 1)[0]).strip("'")


def _describe_property(parent_schema: dict[str, Any], name: str) -> str:
    description = parent_schema.get("properties", {}).get(name, {}).get("description", "")
    fix = f"Add \"{name}\""
    return f"{fix}: {description}" if description else fix


def _unknown_properties(error: Any, path: list[Any]) -> list[Problem]:
    known = sorted(error.schema.get("properties", {}))
    problems = []
    for name in sorted(name for name in error.instance if name not in known):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        fix = f"Did you mean \"{close[0]}\"?" if close else "Remove it."
        fix += f" Valid fields here: {', '.join(known)}"
        problems.append(Problem(format_path(path + [name]), "unknown field", fix))
    return problems
