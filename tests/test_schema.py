"""`ganray schema`: the JSON Schema of a config. Every preset validates against the output of the
real command, a wrong type or an unknown key does not (nor does `ganray validate` pass it), the
schema's defaults and ranges are the dataclasses', and the committed copy the presets name is
the command's output."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from ganray import config, schema
from ganray.config import Config, ConfigError, from_dict

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))
COMMITTED = ROOT / "configs" / "ganray.schema.json"
HEADER = "# yaml-language-server: $schema=ganray.schema.json"
SCRIPT = Path(sys.executable).with_name("ganray")  # the installed entry point (pyproject [project.scripts])
GANRAY = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "ganray.cli"]


def ganray(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*GANRAY, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML (YAML 1.1) with YAML 1.2's floats, as a YAML language server reads a file: 2e-4 is a number."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
    list("-+0123456789."))


def yaml12(text: str):
    return yaml.load(text, Loader=Yaml12Loader)  # a SafeLoader


@pytest.fixture(scope="module")
def printed() -> dict:
    """The schema as the real command prints it."""
    r = ganray("schema")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _errors(sch: dict, doc) -> list[str]:
    v = jsonschema.Draft202012Validator(sch)
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc))


def test_the_output_is_a_draft_2020_12_schema_that_draft_07_reads_too(printed):
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(printed)
    jsonschema.Draft7Validator.check_schema(printed)  # editors whose validator stops at draft-07
    assert set(printed["properties"]) == {f.name for f in dataclasses.fields(Config)}
    assert printed["additionalProperties"] is False
    assert all(s["additionalProperties"] is False for s in printed["properties"].values())
    # the top-level description says what only `ganray validate` checks
    assert "ganray validate" in printed["description"] and "eval.coverage_collapsed" in printed["description"]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_validates_against_the_printed_schema(printed, preset):
    doc = yaml12(preset.read_text(encoding="utf-8"))
    assert _errors(printed, doc) == []
    assert not list(jsonschema.Draft7Validator(printed).iter_errors(doc))


def test_every_preset_names_the_schema_on_its_first_line():
    assert len(PRESETS) >= 6
    for p in PRESETS:
        first = p.read_text(encoding="utf-8").splitlines()[0]
        assert first == HEADER, p.name
        # the YAML language server resolves the path relative to the YAML file
        assert (p.parent / first.split("$schema=", 1)[1]).resolve() == COMMITTED


def test_the_committed_schema_is_the_commands_output(printed):
    assert COMMITTED.is_file(), "run `make schema`"
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == printed, "stale: run `make schema`"
    assert COMMITTED.read_text(encoding="utf-8") == schema.render(), "stale: run `make schema`"


def _bad(dotted: str, value, base: Path = ROOT / "configs" / "ring8.yaml") -> str:
    """The text of `base` with `dotted` set to `value` (its schema line kept)."""
    d = yaml.safe_load(base.read_text(encoding="utf-8"))
    section, key = dotted.split(".")
    d.setdefault(section, {})[key] = value
    return HEADER + "\n" + yaml.safe_dump(d, sort_keys=False)


# (key, value, what `ganray validate` says): wrong types, unknown keys, values out of range or
# choice, and the single-key rules the config checks outside its field metadata (schema.EXTRA)
REJECTED = [
    ("train.steps", "many", "train.steps: expected an integer, got 'many'"),
    ("model.width", "wide", "model.width: expected a number"),
    ("data.download", "maybe", "data.download: expected true or false"),
    ("data.classes", 5, "data.classes: expected a list of int"),
    ("eval.metrics", {"fcd": 1}, "eval.metrics: expected a list of str"),
    ("train.stepz", 10, "train.stepz: unknown key (did you mean 'steps'?)"),
    ("trian.steps", 10, "trian: unknown section (did you mean 'train'?)"),
    ("train.family", "gun", "train.family: unknown value 'gun'"),
    ("model.z_dim", 0, "model.z_dim: must be >= 1"),
    ("model.width", 0, "model.width: must be > 0"),
    ("train.beta1", 1.5, "train.beta1: must be <= 1"),
    ("experiment.seed", 2**31, "experiment.seed: must be <= 2147483647"),
    ("experiment.name", "my run", "experiment.name: must be letters, digits"),
    ("sweep.z_dim", [2, 0], "sweep.z_dim[1]: must be >= 1"),
    ("sweep.lr_g", [0.0], "sweep.lr_g[0]: must be > 0"),
    ("sweep.family", ["gan", "gun"], "sweep.family[1]: unknown value 'gun'"),
    ("sweep.seeds", [-1], "sweep.seeds[0]: must be >= 0"),
    ("sweep.seeds", [], "sweep.seeds: empty grid"),
]


@pytest.mark.parametrize("dotted, value, message", REJECTED, ids=[f"{k}={v!r}" for k, v, _ in REJECTED])
def test_the_schema_and_ganray_validate_reject_a_bad_preset(printed, tmp_path, dotted, value, message):
    text = _bad(dotted, value)
    section = dotted.split(".")[0]
    errs = _errors(printed, yaml12(text))
    assert errs and all(e.startswith(section) or e.startswith(":") for e in errs), errs
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    r = ganray("validate", "bad.yaml", cwd=tmp_path)  # a relative path, as people type it
    assert r.returncode == 2, r.stdout + r.stderr
    assert "bad.yaml: INVALID" in r.stderr and message in r.stderr, r.stderr


def test_a_wrong_type_names_the_key_in_the_schemas_error(printed):
    (err,) = jsonschema.Draft202012Validator(printed).iter_errors(yaml12(_bad("train.steps", "many")))
    assert list(err.absolute_path) == ["train", "steps"] and "'many' is not of type 'integer'" in err.message
    (err,) = jsonschema.Draft202012Validator(printed).iter_errors(yaml12(_bad("train.stepz", 10)))
    assert list(err.absolute_path) == ["train"] and "'stepz' was unexpected" in err.message


def test_the_schemas_defaults_are_the_dataclasses(printed):
    defaults = {sec: {k: p["default"] for k, p in s["properties"].items()} for sec, s in printed["properties"].items()}
    assert from_dict(defaults) == Config()
    # key by key: the dataclass defaults before the family fills the unset train keys
    for sec in dataclasses.fields(Config):
        cls = sec.default_factory
        for f in dataclasses.fields(cls):
            want = f.default_factory() if f.default is dataclasses.MISSING else f.default
            want = list(want) if isinstance(want, tuple) else want
            assert defaults[sec.name][f.name] == want, f"{sec.name}.{f.name}"
    assert all(defaults["train"][k] is None for k in config.FAMILY_KEYS)  # null: the family's settings
    # and they validate against the schema itself
    assert _errors(printed, defaults) == []


def test_every_field_has_a_description_and_every_range_is_in_the_schema(printed):
    undocumented = []
    for sec in dataclasses.fields(Config):
        props = printed["properties"][sec.name]
        assert props["description"].strip(), f"section {sec.name} has no description"
        for f in dataclasses.fields(sec.default_factory):
            if not f.metadata.get("doc", "").strip():
                undocumented.append(f"{sec.name}.{f.name}")
            p = props["properties"][f.name]
            assert p["description"] == f.metadata.get("doc", "")
            inner = p.get("items", p)  # a list's range and choices hold for its items
            for meta, word in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum")):
                if f.metadata.get(meta) is not None:
                    assert inner[word] == f.metadata[meta], f"{sec.name}.{f.name} {word}"
            if f.metadata.get("choices") is not None:
                assert [c for c in inner["enum"] if c is not None] == list(f.metadata["choices"])
    assert not undocumented, f"add doc= to {undocumented} in ganray/config/sections.py"


def test_types_map_to_json_schema_types(printed):
    props = {sec: s["properties"] for sec, s in printed["properties"].items()}
    assert props["train"]["steps"]["type"] == "integer"
    width = props["model"]["width"]
    assert (width["type"], width["exclusiveMinimum"], width["maximum"], width["default"]) == ("number", 0, 16, 0.25)
    assert props["model"]["g_ema"]["type"] == "boolean"
    assert props["train"]["lr_g"]["type"] == ["number", "null"]
    assert props["train"]["n_critic"]["type"] == ["integer", "null"]
    assert props["data"]["classes"]["type"] == "array" and props["data"]["classes"]["items"]["type"] == "integer"
    assert props["sweep"]["family"]["items"]["enum"] == list(config.FAMILIES)
    assert props["eval"]["metrics"]["items"] == {"type": "string"}  # metric names: the registry, ganray validate
    # an integer value is a number (model.width: 1), and a float with no fraction an integer (train.steps: 1.0e3)
    assert _errors(printed, {"model": {"width": 1}, "train": {"steps": 1.0e3, "lr_g": None}}) == []
    from_dict({"model": {"width": 1}, "train": {"steps": 1.0e3, "lr_g": None}})


def test_every_range_the_schema_states_is_one_the_config_enforces(printed):
    """Just outside each minimum, exclusiveMinimum and maximum the schema gives, the config refuses too."""
    checked = 0
    for sec, s in printed["properties"].items():
        for key, p in s["properties"].items():
            inner = p.get("items", p)
            step = 1 if "integer" in str(inner["type"]) else 0.5
            for word, outside in (("minimum", -step), ("exclusiveMinimum", 0), ("maximum", step)):
                if word in inner:
                    v = inner[word] + outside
                    value = [v] if p["type"] == "array" else v
                    assert _errors(printed, {sec: {key: value}}), f"{sec}.{key}={value!r}"
                    with pytest.raises(ConfigError):
                        from_dict({sec: {key: value}})
                    checked += 1
    assert checked > 50


def test_output_writes_the_file_atomically(tmp_path):
    r = ganray("schema", "--output", "ganray.schema.json", cwd=tmp_path)  # relative, as `make schema` does
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert (tmp_path / "ganray.schema.json").read_text(encoding="utf-8") == schema.render()
    assert (tmp_path / "ganray.schema.json").stat().st_mode & 0o644 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ganray.schema.json"]  # no temporary file left
    r = ganray("schema", "--output", "missing/ganray.schema.json", cwd=tmp_path)
    assert r.returncode == 2 and "--output missing/ganray.schema.json: folder missing does not exist" in r.stderr
    r = ganray("schema", "--output", ".", cwd=tmp_path)
    assert r.returncode == 2 and "--output .: cannot write" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ganray.schema.json"]


def _modules(code: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", code + "\nprint(json.dumps(sorted(sys.modules)))"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


def test_ganray_schema_loads_no_torch_and_the_module_not_the_metrics_registry():
    """`ganray schema` stays as light as `ganray validate` (tests/test_config.py); ganray.schema
    itself needs only the config floor, not the metrics registry that the CLI's argument layer loads."""
    heavy = {"torch", "pyarrow", "numpy", "ray", "boto3", "google"}
    loaded = _modules("import json, sys\nfrom ganray.cli import main\nassert main(['schema']) == 0")
    assert "ganray.schema" in loaded and not {m for m in loaded if m.split(".")[0] in heavy}
    alone = _modules("import json, sys\nimport ganray.schema\nganray.schema.render()")
    assert not {m for m in alone if m.split(".")[0] in heavy}
    assert {m for m in alone if m.startswith("ganray.")} == {"ganray.schema", "ganray.config", "ganray.config.parse",
                                                                "ganray.config.sections", "ganray.exits"}


def test_the_user_docs_name_the_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    doc = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert "ganray schema" in readme and "make schema" in readme and "docs/config.md" in readme
    assert "ganray schema" in doc and HEADER in doc and "make schema" in doc
    # what the schema cannot say is documented where people read about the schema
    for rule in ("eval.coverage_collapsed <= eval.coverage_partial", "family", "ganray validate"):
        assert rule in doc
    assert "schema" in (ROOT / "Makefile").read_text(encoding="utf-8")
