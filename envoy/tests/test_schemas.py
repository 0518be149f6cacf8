"""The JSON Schemas under policies/ with Python's jsonschema, the validator family editors and CI tools use.

`warden lint` runs the bundle schema with the Rust `jsonschema` crate and control/tests/cli/schemas.rs checks every
schema against the code that reads its format. This file checks the same schemas with a second, independent
implementation (regular-expression dialects differ between engines), and the shipped deployment files with the
plugin configuration schema:

- every schema is a valid draft 2020-12 schema;
- the example bundles and cases files are valid; every refused bundle of control/tests/cli/fixtures/refused-bundles.json
  marked as expressible is refused at its place, and the others are accepted;
- every plugin configuration embedded in envoy/ (envoy.yaml, the Istio WasmPlugin, the Envoy Gateway policy) is valid
  against policies/plugin-config.schema.json.

Run: py=$(scripts/python-env.sh) && "$py" -m pytest envoy/tests/test_schemas.py -q
"""

import copy
import json
import pathlib

import jsonschema
import pytest

from test_configs import embedded_plugin_configs

ROOT = pathlib.Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
SCHEMAS = ["bundle.schema.json", "cases.schema.json", "request.schema.json", "plugin-config.schema.json"]
FIXTURE = ROOT / "control" / "tests" / "cli" / "fixtures" / "refused-bundles.json"


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def validator(name):
    return jsonschema.Draft202012Validator(load(POLICIES / name))


def pointer(doc, ptr):
    for token in ptr.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def apply_patch(doc, ops):
    """JSON Patch (RFC 6902: add, replace, remove; "-" appends); {"$copy": PTR} as a value copies that value."""
    for op in ops:
        value = op.get("value")
        if isinstance(value, dict) and "$copy" in value:
            value = copy.deepcopy(pointer(doc, value["$copy"]))
        parent_ptr, last = op["path"].rsplit("/", 1)
        last = last.replace("~1", "/").replace("~0", "~")
        parent = pointer(doc, parent_ptr)
        if isinstance(parent, list):
            if op["op"] == "add":
                parent.append(value) if last == "-" else parent.insert(int(last), value)
            elif op["op"] == "replace":
                parent[int(last)] = value
            else:
                del parent[int(last)]
        elif op["op"] == "remove":
            del parent[last]
        else:
            parent[last] = value


def places(error):
    """Where an error is: its instance path as a JSON pointer; for a missing or unknown member, that member."""
    at = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return [at + "/" + missing]
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        return [at + "/" + k for k in error.instance if k not in known] or [at]
    return [at]


def related(found, at):
    return found == at or found.startswith(at + "/") or (found != "" and at.startswith(found + "/"))


@pytest.mark.parametrize("name", SCHEMAS)
def test_each_schema_is_a_valid_2020_12_schema(name):
    jsonschema.Draft202012Validator.check_schema(load(POLICIES / name))


@pytest.mark.parametrize("name", ["coding-agent", "finance-agent", "payments-mcp", "support-agent"])
def test_the_examples_are_valid(name):
    examples = POLICIES / "examples"
    bundle = load(examples / f"{name}.json")
    assert [e.message for e in validator("bundle.schema.json").iter_errors(bundle)] == []
    cases = load(examples / f"{name}.cases.json")
    assert [e.message for e in validator("cases.schema.json").iter_errors(cases)] == []


def test_refused_bundles_are_refused_by_this_validator_too():
    fixture = load(FIXTURE)
    base = load(ROOT / fixture["base"])
    v = validator("bundle.schema.json")
    assert not list(v.iter_errors(base))
    problems = []
    for case in fixture["cases"]:
        doc = copy.deepcopy(base)
        apply_patch(doc, case["patch"])
        found = [p for e in v.iter_errors(doc) for p in places(e)]
        if case["schema"] is True:
            if not any(related(f, case["at"]) for f in found):
                problems.append(f"{case['name']}: expected a refusal at {case['at']}, got {found}")
        elif found:
            problems.append(f"{case['name']}: marked as beyond JSON Schema but refused at {found}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source,text", [pytest.param(s, t, id=s.split(":")[0]) for s, t in embedded_plugin_configs()])
def test_shipped_plugin_configurations_are_valid(source, text):
    v = validator("plugin-config.schema.json")
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(json.loads(text))]
    assert errors == [], source


def test_the_plugin_configuration_schema_refuses_a_typo():
    _, text = embedded_plugin_configs()[0]
    config = json.loads(text)
    config["control"]["poll_second"] = config["control"].pop("poll_seconds", 10)
    errors = list(validator("plugin-config.schema.json").iter_errors(config))
    assert [e.validator for e in errors] == ["additionalProperties"]
