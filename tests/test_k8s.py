"""Every manifest in k8s/ checked as the cluster would check it, plus the project's rules.

What the cluster checks, reproduced offline:
  * RayCluster and RayJob against the KubeRay v1 CRD schemas (../shared/kuberay-crds/,
    `openAPIV3Schema`) with jsonschema. The API server prunes or rejects fields a
    structural schema does not declare (kubectl's default field validation is Strict),
    so unknown fields are errors here too; `x-kubernetes-int-or-string` fields (resource
    quantities, ports) take an integer or a string matching the quantity pattern;
    `x-kubernetes-list-type: set|map` lists must not repeat items or keys; int32
    fields must fit. CEL rules (`x-kubernetes-validations`) are not evaluated.
  * The checks the KubeRay operator runs before it creates anything (names, groups,
    autoscaler v2 restart policy, RayJob deadlines and retry limits), transcribed from
    its validation code, since the CRD schema alone accepts what the operator rejects.
  * Core kinds (Namespace, ServiceAccount, ConfigMap, Deployment, Service) with
    kubernetes-validate, strict, for Kubernetes K8S_VERSION.
  * Deliberately broken copies (a misspelled field, a wrong type, a bad quantity) fail.

The project's rules (issue 7): one Ray version everywhere; every entrypoint and config a
manifest names exists; no secret, key or password literal; every container sets
requests and limits; nothing exposes the dashboard or TensorBoard outside the cluster;
a CPU-only head and autoscaled GPU workers; every placeholder documented.
"""
from __future__ import annotations

import copy
import functools
import re
import shlex
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
K8S_DIR = REPO / "k8s"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
CRD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "kuberay-crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
# The oldest minor we deploy to: a field added to Kubernetes later fails validation here.
K8S_VERSION = "1.33.0"
NAMESPACE = "ganray"
GPU = "nvidia.com/gpu"
# libyaml parses the 2 MB CRDs in a fraction of a second; the pure-Python loader is ~20x slower.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Doc = dict[str, Any]


# --------------------------------------------------------------------------- loading


def manifest_files() -> list[Path]:
    return sorted(K8S_DIR.glob("*.yaml"))


def load_docs(path: Path) -> list[Doc]:
    """The non-empty YAML documents of one manifest file."""
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@functools.cache
def all_docs() -> tuple[tuple[str, Doc], ...]:
    """(file name, object) for every object in k8s/, in file order."""
    return tuple((p.name, d) for p in manifest_files() for d in load_docs(p))


def docs_of(kind: str) -> list[Doc]:
    return [d for _, d in all_docs() if d.get("kind") == kind]


def ray_docs() -> list[tuple[str, Doc]]:
    return [(f, d) for f, d in all_docs() if d.get("kind") in CRD_FILES]


def core_docs() -> list[tuple[str, Doc]]:
    return [(f, d) for f, d in all_docs() if d.get("kind") not in CRD_FILES]


def doc_id(item: tuple[str, Doc]) -> str:
    name, doc = item
    return f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def cluster_specs(doc: Doc) -> list[tuple[str, Doc]]:
    """(path, RayClusterSpec) held by a RayCluster or a RayJob."""
    if doc.get("kind") == "RayCluster":
        return [("spec", doc["spec"])]
    if doc.get("kind") == "RayJob" and "rayClusterSpec" in doc.get("spec", {}):
        return [("spec.rayClusterSpec", doc["spec"]["rayClusterSpec"])]
    return []


def pod_specs(node: Any, path: str = "") -> Iterator[tuple[str, Doc]]:
    """Every PodSpec inside an object: any mapping that holds a `containers` list."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield path or "<root>", node
        for key, value in node.items():
            yield from pod_specs(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from pod_specs(value, f"{path}[{i}]")


def containers(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(path, container) for every container a manifest makes the cluster run, the
    KubeRay autoscaler sidecar included (configured through autoscalerOptions)."""
    for path, spec in pod_specs(doc):
        for field in ("initContainers", "containers"):
            for i, c in enumerate(spec.get(field) or []):
                yield f"{path}.{field}[{i}]({c.get('name')})", c
    for path, spec in cluster_specs(doc):
        if spec.get("enableInTreeAutoscaling"):
            yield f"{path}.autoscalerOptions(autoscaler sidecar)", spec.get("autoscalerOptions") or {}


# --------------------------------------------------------------- CRD schema validation


def _strict_schema(node: Any) -> Any:
    """A CRD structural schema as a JSON schema that rejects what the API server would.

    Structural schemas list their fields but do not say `additionalProperties: false`;
    the API server prunes unknown fields, and kubectl's Strict field validation turns
    that into an error. Recursion follows schema keywords only, so a field that happens
    to be called "type" or "properties" is never mistaken for a keyword.
    """
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: _strict_schema(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict_schema(out["additionalProperties"])
    if "items" in out:
        out["items"] = _strict_schema(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_strict_schema(s) for s in out[key]]
    # int-or-string (quantities, ports): an integer, or a string that must match `pattern`
    # when one is given (jsonschema applies `pattern` to strings only, as Kubernetes does).
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _list_map_keys(validator, keys, instance, schema) -> Iterator[jsonschema.ValidationError]:
    """x-kubernetes-list-type: map — no two items may share the key fields (e.g. two
    containers or two env vars with one name)."""
    if not validator.is_type(instance, "array"):
        return
    seen: dict[tuple, int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(f"items {seen[key]} and {i} share the map key {dict(zip(keys, key))}")
        seen.setdefault(key, i)


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("int32")
def _is_int32(value: Any) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_FORMATS.checks("int64")
def _is_int64(value: Any) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


# OpenAPI v3.0 schemas are JSON Schema draft 4 in their keywords (boolean exclusiveMinimum etc.).
_CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-map-keys": _list_map_keys}
)


@functools.cache
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRD schemas not found at {CRD_DIR} (expected ../shared/kuberay-crds beside the repo)")
    with (CRD_DIR / CRD_FILES[kind]).open() as f:
        crd = yaml.load(f, Loader=_YAML_LOADER)
    assert crd["spec"]["names"]["kind"] == kind, f"{CRD_FILES[kind]} defines {crd['spec']['names']['kind']}, not {kind}"
    v1 = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert v1 and v1[0]["served"], f"{CRD_FILES[kind]} does not serve ray.io/v1"
    schema = _strict_schema(v1[0]["schema"]["openAPIV3Schema"])
    return _CRDValidator(schema, format_checker=_FORMATS)


# Root metadata of a custom resource is not described by the CRD (the API server checks
# it as ObjectMeta): the fields manifests may set, strictly.
_METADATA_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def crd_errors(doc: Doc) -> list[str]:
    """Schema errors of a RayCluster or RayJob, each as 'path: message'."""
    errors = [f"apiVersion: {doc.get('apiVersion')!r} is not 'ray.io/v1'"] if doc.get("apiVersion") != "ray.io/v1" else []
    found = list(crd_validator(doc["kind"]).iter_errors(doc))
    found += list(jsonschema.Draft4Validator(_METADATA_SCHEMA).iter_errors(doc.get("metadata")))
    for e in sorted(found, key=lambda e: list(map(str, e.absolute_path))):
        errors.append(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}")
    return errors


def core_errors(doc: Doc) -> list[str]:
    """kubernetes-validate (strict: unknown fields are errors) for a core kind."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


# ----------------------------------------------------- KubeRay operator's own checks

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# ray-operator/controllers/ray/utils/constant.go: 63 minus the longest service suffix
# ("-serve-svc"); a RayJob's cluster name adds a 6-character suffix.
_MAX_NAME = {"RayCluster": 53, "RayJob": 47}
_RAY_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")


def _group_errors(where: str, group: Doc) -> list[str]:
    errors = []
    if not group.get("template", {}).get("spec", {}).get("containers"):
        errors.append(f"{where}: the pod template has no container")
    start = group.get("rayStartParams") or {}
    if group.get("resources") and any(start.get(k) for k in _RAY_START_RESOURCES):
        errors.append(f"{where}: resources set both in rayStartParams and in resources")
    if "labels" in start:
        errors.append(f"{where}: rayStartParams['labels'] is not supported; use the group's labels field")
    return errors


def kuberay_spec_errors(path: str, spec: Doc) -> list[str]:
    """ValidateRayClusterSpec (ray-operator/controllers/ray/utils/validation.go)."""
    errors = _group_errors(f"{path}.headGroupSpec", spec.get("headGroupSpec", {}))
    groups = spec.get("workerGroupSpecs") or []
    for i, g in enumerate(groups):
        where = f"{path}.workerGroupSpecs[{i}]({g.get('groupName')})"
        errors += _group_errors(where, g)
        if g.get("minReplicas", 0) > g.get("maxReplicas", 2**31):
            errors.append(f"{where}: minReplicas {g['minReplicas']} > maxReplicas {g['maxReplicas']}")
        if spec.get("enableInTreeAutoscaling") and g.get("suspend"):
            errors.append(f"{where}: a worker group cannot be suspended with the autoscaler on")
    names = [g.get("groupName") for g in groups]
    if len(names) != len(set(names)):
        errors.append(f"{path}.workerGroupSpecs: duplicate groupName in {names}")
    if spec.get("enableInTreeAutoscaling") and (spec.get("autoscalerOptions") or {}).get("version") == "v2":
        templates = [("headGroupSpec", spec.get("headGroupSpec", {}))] + [(f"workerGroupSpecs[{i}]", g) for i, g in enumerate(groups)]
        for where, group in templates:
            policy = group.get("template", {}).get("spec", {}).get("restartPolicy", "")
            if policy not in ("", "Never"):
                errors.append(f"{path}.{where}: restartPolicy {policy!r}; autoscaler v2 needs Never or unset")
    return errors


def kuberay_errors(doc: Doc) -> list[str]:
    """What the KubeRay operator rejects in a RayCluster or RayJob beyond the schema."""
    kind, name = doc["kind"], doc.get("metadata", {}).get("name", "")
    errors = []
    if not _DNS1035.match(name) or len(name) > _MAX_NAME[kind]:
        errors.append(f"metadata.name {name!r}: must be a DNS-1035 label of at most {_MAX_NAME[kind]} characters")
    for path, spec in cluster_specs(doc):
        errors += kuberay_spec_errors(path, spec)
    if kind == "RayJob":
        spec = doc.get("spec", {})
        selector = spec.get("clusterSelector") or {}
        if "rayClusterSpec" not in spec and not selector:
            errors.append("spec: one of rayClusterSpec or clusterSelector must be set")
        if selector and not selector.get("ray.io/cluster"):
            errors.append("spec.clusterSelector: needs a non-empty 'ray.io/cluster'")
        if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
            errors.append("spec.suspend: only allowed with shutdownAfterJobFinishes")
        if "activeDeadlineSeconds" in spec and spec["activeDeadlineSeconds"] <= 0:
            errors.append("spec.activeDeadlineSeconds: must be a positive integer")
        for where, limit in (("spec.backoffLimit", spec.get("backoffLimit")),
                             ("spec.submitterConfig.backoffLimit", (spec.get("submitterConfig") or {}).get("backoffLimit"))):
            if limit is not None and limit < 0:
                errors.append(f"{where}: must not be negative")
        if spec.get("entrypoint") and not spec["entrypoint"].strip():
            errors.append("spec.entrypoint: empty")
    return errors


# ----------------------------------------------------------- the project's own rules

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
           "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity(value: str | int) -> Decimal:
    """A Kubernetes resource quantity ("500m", "20Gi", "2", 1e3) as a number."""
    m = _QUANTITY.match(str(value))
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = m.group(1), m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(number + suffix)
    return Decimal(number) * Decimal(_SUFFIX[suffix])


def resource_problems(doc: Doc) -> list[str]:
    """Every container requests and limits cpu and memory, and requests <= limits."""
    problems = []
    for path, c in containers(doc):
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for r in ("cpu", "memory"):
            for name, table in (("requests", requests), ("limits", limits)):
                if r not in table:
                    problems.append(f"{path}: no resources.{name}.{r}")
        for r in set(requests) & set(limits):
            if quantity(requests[r]) > quantity(limits[r]):
                problems.append(f"{path}: requests.{r} {requests[r]} exceeds limits.{r} {limits[r]}")
    return problems


_EXPOSING_KINDS = {"Ingress", "IngressClass", "Gateway", "HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute", "Route"}


def exposure_problems(doc: Doc) -> list[str]:
    """Anything that would make a port reachable from outside the cluster."""
    problems = []
    kind = doc.get("kind")
    if kind in _EXPOSING_KINDS:
        problems.append(f"{kind} objects expose services outside the cluster")
    if kind == "Service":
        spec = doc.get("spec", {})
        if spec.get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"Service type {spec['type']}: only ClusterIP")
        for field in ("externalIPs", "loadBalancerIP", "externalName"):
            if spec.get(field):
                problems.append(f"Service sets {field}")
    for path, spec in cluster_specs(doc):
        head = spec.get("headGroupSpec", {})
        if head.get("serviceType", "ClusterIP") != "ClusterIP":
            problems.append(f"{path}.headGroupSpec.serviceType {head['serviceType']}: only ClusterIP")
        if head.get("enableIngress"):
            problems.append(f"{path}.headGroupSpec.enableIngress is true")
        head_svc_type = (head.get("headService") or {}).get("spec", {}).get("type", "ClusterIP")
        if head_svc_type != "ClusterIP":
            problems.append(f"{path}.headGroupSpec.headService type {head_svc_type}: only ClusterIP")
    for path, spec in pod_specs(doc):
        if spec.get("hostNetwork"):
            problems.append(f"{path}: hostNetwork")
    for path, c in containers(doc):
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{path}: hostPort {port['hostPort']}")
    return problems


_SECRET_NAME = re.compile(r"passw|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|credential", re.I)
_CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_CLIENT_SECRET"}
_SECRET_TEXT = {
    "an AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a PEM private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a Google service-account key file": re.compile(r"\"type\"\s*:\s*\"service_account\""),
    "an aws_secret_access_key setting": re.compile(r"aws_secret_access_key\s*[=:]", re.I),
}


def secret_problems(text: str, docs: list[Doc]) -> list[str]:
    """Secret, key or password literals, and any credential plumbing other than workload
    identity: ganray's pods get bucket access from their service account only."""
    problems = [f"text holds {what}" for what, rx in _SECRET_TEXT.items() if rx.search(text)]

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            env_name = node.get("name") if "value" in node or "valueFrom" in node else None
            if isinstance(env_name, str) and (env_name in _CREDENTIAL_ENV or _SECRET_NAME.search(env_name)):
                problems.append(f"{path}: environment variable {env_name} carries a credential")
            for key, value in node.items():
                where = f"{path}.{key}" if path else str(key)
                if key in ("secretKeyRef", "secretRef", "secret"):
                    problems.append(f"{where}: reads a Secret; ganray uses workload identity only")
                elif isinstance(value, str) and value and _SECRET_NAME.search(str(key)):
                    problems.append(f"{where}: literal value under a secret-like key")
                walk(value, where)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    for doc in docs:
        if doc.get("kind") == "Secret":
            problems.append(f"Secret {doc.get('metadata', {}).get('name')}: no Secrets in manifests")
        walk(doc, f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}")
    return problems


# ----------------------------------------------------------------- versions and files


def pyproject() -> Doc:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def pyproject_ray_requirement() -> Requirement:
    reqs = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    ray = [r for r in reqs if r.name == "ray"]
    assert len(ray) == 1, f"pyproject.toml should list ray exactly once, found {[str(r) for r in ray]}"
    return ray[0]


def dockerfile_base_image() -> str:
    froms = re.findall(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", DOCKERFILE.read_text(), re.M | re.I)
    assert froms, f"{DOCKERFILE} has no FROM"
    return froms[-1]


def dockerfile_workdir() -> str:
    workdirs = re.findall(r"^\s*WORKDIR\s+(\S+)", DOCKERFILE.read_text(), re.M | re.I)
    assert workdirs, f"{DOCKERFILE} has no WORKDIR"
    return workdirs[-1]


def image_ray_version() -> Version:
    """The Ray version of the Dockerfile's base image, from its tag (2.60.0-py311-gpu)."""
    image = dockerfile_base_image()
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py\d+-(gpu|cu\d+)", image)
    assert m, f"base image {image!r} is not an official rayproject/ray GPU tag of a release"
    return Version(m.group(1))


def entrypoint_files(entrypoint: str) -> list[str]:
    """Repository paths a RayJob entrypoint names: the script and any --config file."""
    argv = shlex.split(entrypoint)
    files = []
    if argv and re.fullmatch(r"python(3(\.\d+)?)?", argv[0]):
        script = next((a for a in argv[1:] if not a.startswith("-")), None)
        assert script, f"entrypoint {entrypoint!r} names no script"
        files.append(script)
    for flag, value in zip(argv, argv[1:]):
        if flag == "--config":
            files.append(value)
    files += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    return files


# ============================================================================ tests


def test_manifest_folder_holds_only_loadable_yaml() -> None:
    files = sorted(p.name for p in K8S_DIR.iterdir())
    assert files, "k8s/ is empty"
    assert all(f.endswith(".yaml") for f in files), f"k8s/ should hold only .yaml manifests, found {files}"
    for path in manifest_files():
        docs = load_docs(path)
        assert docs, f"{path.name} holds no object"
        for doc in docs:
            assert isinstance(doc, dict) and {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path.name}: not a Kubernetes object: {doc!r:.200}"
            assert doc["metadata"].get("name"), f"{path.name}: {doc['kind']} without metadata.name"
            if doc["kind"] != "Namespace":
                # The namespace is part of the workload identity bindings (docs/deploy.md).
                assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.name}: {doc['kind']}/{doc['metadata']['name']} not in namespace {NAMESPACE}"
    kinds = {d["kind"] for _, d in all_docs()}
    for kind in ("RayCluster", "RayJob", "ServiceAccount", "Deployment", "Service", "ConfigMap", "Namespace"):
        assert kind in kinds, f"no {kind} in k8s/"


@pytest.mark.parametrize("item", ray_docs(), ids=doc_id)
def test_ray_objects_match_kuberay_crd_schema(item: tuple[str, Doc]) -> None:
    name, doc = item
    errors = crd_errors(doc)
    assert not errors, f"{name} fails the KubeRay {doc['kind']} schema:\n" + "\n".join(errors)


@pytest.mark.parametrize("item", ray_docs(), ids=doc_id)
def test_ray_objects_pass_kuberay_operator_checks(item: tuple[str, Doc]) -> None:
    name, doc = item
    errors = kuberay_errors(doc)
    assert not errors, f"{name} would be rejected by the KubeRay operator:\n" + "\n".join(errors)


@pytest.mark.parametrize("item", core_docs(), ids=doc_id)
def test_core_objects_pass_kubernetes_validate(item: tuple[str, Doc]) -> None:
    name, doc = item
    errors = core_errors(doc)
    assert not errors, f"{name} is not a valid Kubernetes {K8S_VERSION} object:\n" + "\n".join(errors)


def _file_doc(file: str, kind: str) -> Doc:
    return copy.deepcopy(next(d for f, d in all_docs() if f == file and d["kind"] == kind))


def _rename_key(node: Doc, old: str, new: str) -> None:
    node[new] = node.pop(old)


# (id, file, kind, mutation, which check, text the error must contain)
BROKEN_COPIES: list[tuple[str, str, str, Callable[[Doc], None], Callable[[Doc], list[str]], str]] = [
    ("raycluster-misspelled-field", "raycluster.yaml", "RayCluster",
     lambda d: _rename_key(d["spec"]["workerGroupSpecs"][0], "minReplicas", "minReplica"), crd_errors, "minReplica"),
    ("raycluster-string-for-integer", "raycluster.yaml", "RayCluster",
     lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicas="8"), crd_errors, "is not of type 'integer'"),
    ("raycluster-bad-quantity", "raycluster.yaml", "RayCluster",
     lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(memory="8 GB"),
     crd_errors, "does not match"),
    ("raycluster-unknown-container-field", "raycluster.yaml", "RayCluster",
     lambda d: _rename_key(d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0], "resources", "resource"),
     crd_errors, "resource"),
    ("raycluster-duplicate-env", "raycluster.yaml", "RayCluster",
     lambda d: (lambda env: env.append(copy.deepcopy(env[0])))(d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]),
     crd_errors, "share the map key"),
    ("raycluster-int32-overflow", "raycluster.yaml", "RayCluster",
     lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicas=2**31), crd_errors, "int32"),
    ("raycluster-wrong-api-version", "raycluster.yaml", "RayCluster",
     lambda d: d.update(apiVersion="ray.io/v1alpha2"), crd_errors, "ray.io/v1"),
    ("raycluster-unknown-metadata-field", "raycluster.yaml", "RayCluster",
     lambda d: d["metadata"].update(label={"a": "b"}), crd_errors, "label"),
    ("rayjob-string-for-boolean", "rayjob.sweep-zdim.yaml", "RayJob",
     lambda d: d["spec"].update(shutdownAfterJobFinishes="yes"), crd_errors, "is not of type 'boolean'"),
    ("rayjob-misspelled-field", "rayjob.sweep-zdim.yaml", "RayJob",
     lambda d: _rename_key(d["spec"]["submitterConfig"], "backoffLimit", "backofLimit"), crd_errors, "backofLimit"),
    ("rayjob-zero-deadline", "rayjob.sweep-zdim.yaml", "RayJob",
     lambda d: d["spec"].update(activeDeadlineSeconds=0), kuberay_errors, "activeDeadlineSeconds"),
    ("raycluster-name-too-long", "raycluster.yaml", "RayCluster",
     lambda d: d["metadata"].update(name="g" * 54), kuberay_errors, "at most 53"),
    ("raycluster-v2-restart-always", "raycluster.yaml", "RayCluster",
     lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"].update(restartPolicy="Always"), kuberay_errors, "restartPolicy"),
    ("deployment-string-for-integer", "tensorboard.yaml", "Deployment",
     lambda d: d["spec"].update(replicas="1"), core_errors, "is not of type 'integer'"),
    ("deployment-misspelled-field", "tensorboard.yaml", "Deployment",
     lambda d: _rename_key(d["spec"]["template"]["spec"], "containers", "container"), core_errors, "container"),
    ("service-wrong-field", "tensorboard.yaml", "Service",
     lambda d: d["spec"].update(targetPort=6006), core_errors, "targetPort"),
    ("serviceaccount-wrong-type", "serviceaccount.yaml", "ServiceAccount",
     lambda d: d.update(automountServiceAccountToken="no"), core_errors, "is not of type 'boolean'"),
]


@pytest.mark.parametrize("case", BROKEN_COPIES, ids=[c[0] for c in BROKEN_COPIES])
def test_broken_copy_fails_validation(case) -> None:
    case_id, file, kind, mutate, check, expected = case
    doc = _file_doc(file, kind)
    assert not check(doc), f"{case_id}: the unmodified {file} should pass {check.__name__}"
    mutate(doc)
    errors = check(doc)
    assert errors, f"{case_id}: the broken copy of {file} passed {check.__name__}"
    assert any(expected in e for e in errors), f"{case_id}: no error mentions {expected!r}: {errors}"


def test_ray_versions_agree() -> None:
    """pyproject's ray requirement, the Dockerfile's base image, every rayVersion and every
    image tag name one Ray version."""
    spec = pyproject_ray_requirement().specifier
    image_version = image_ray_version()
    assert image_version in spec, f"Dockerfile base image has Ray {image_version}, outside pyproject's ray{spec}"
    specs = [(f, path, s) for f, d in ray_docs() for path, s in cluster_specs(d)]
    assert specs, "no RayCluster spec in k8s/"
    for file, path, s in specs:
        assert Version(str(s.get("rayVersion"))) == image_version, f"{file} {path}.rayVersion {s.get('rayVersion')!r} != Ray {image_version} in the image"
    project_version = pyproject()["project"]["version"]
    expected_tag = f"ganray:{project_version}-ray{image_version}"
    for file, doc in all_docs():
        for path, c in containers(doc):
            if "image" in c:
                assert c["image"].endswith("/" + expected_tag), f"{file} {path}: image {c['image']!r} is not the ganray image tagged {expected_tag}"
    guard = re.search(r"ray\.__version__ == '([^']+)'", DOCKERFILE.read_text())
    assert guard and Version(guard.group(1)) == image_version, "the Dockerfile's build-time Ray version check does not match its base image"


def test_rayjob_cluster_equals_raycluster() -> None:
    """The RayJob embeds its own cluster; it must not drift from k8s/raycluster.yaml."""
    (cluster,) = docs_of("RayCluster")
    for job in docs_of("RayJob"):
        assert job["spec"].get("rayClusterSpec") == cluster["spec"], (
            f"RayJob {job['metadata']['name']}: spec.rayClusterSpec differs from k8s/raycluster.yaml's spec; edit both"
        )


def test_entrypoints_and_config_files_exist() -> None:
    """Files a manifest names resolve in the repository, which the image copies to its
    WORKDIR, and the Ray containers start in that WORKDIR."""
    workdir = dockerfile_workdir()
    jobs = docs_of("RayJob")
    assert jobs
    missing = []
    for job in jobs:
        files = entrypoint_files(job["spec"]["entrypoint"])
        assert files, f"RayJob {job['metadata']['name']}: entrypoint names no file"
        missing += [f"RayJob {job['metadata']['name']}: {f}" for f in files if not (REPO / f).is_file()]
    assert not missing, "files named by manifests are missing from the repository:\n" + "\n".join(missing)
    for file, doc in ray_docs():
        for path, c in containers(doc):
            if "image" in c and "ray-job-submitter" not in path:
                assert c.get("workingDir") == workdir, f"{file} {path}: workingDir {c.get('workingDir')!r} != Dockerfile WORKDIR {workdir}"


def test_rayjob_lifecycle_and_submitter_environment() -> None:
    for job in docs_of("RayJob"):
        spec, name = job["spec"], job["metadata"]["name"]
        assert spec.get("shutdownAfterJobFinishes") is True, f"RayJob {name}: shutdownAfterJobFinishes should be true"
        assert spec.get("activeDeadlineSeconds", 0) > 0, f"RayJob {name}: needs activeDeadlineSeconds"
        assert "backoffLimit" in spec.get("submitterConfig", {}), f"RayJob {name}: needs submitterConfig.backoffLimit"
        # The submitter's shell expands $VARS in the entrypoint: each must be set there.
        env_vars = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", spec["entrypoint"]))
        assert "GANRAY_STORAGE" in env_vars, f"RayJob {name}: the storage URI should come from $GANRAY_STORAGE"
        submitter = spec["submitterPodTemplate"]["spec"]["containers"][0]
        defined = {e["name"] for e in submitter.get("env", [])}
        assert env_vars <= defined, f"RayJob {name}: entrypoint uses {sorted(env_vars - defined)} not set in the submitter pod"


def test_references_resolve() -> None:
    """Service accounts and ConfigMap keys the pods use are defined in k8s/."""
    accounts = {d["metadata"]["name"] for d in docs_of("ServiceAccount")}
    config = {d["metadata"]["name"]: d.get("data", {}) for d in docs_of("ConfigMap")}
    for file, doc in all_docs():
        for path, spec in pod_specs(doc):
            sa = spec.get("serviceAccountName")
            assert sa is None or sa in accounts, f"{file} {path}: serviceAccountName {sa!r} is not defined in k8s/"
        for path, c in containers(doc):
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in config.get(ref["name"], {}), f"{file} {path}: env {env['name']} refers to missing ConfigMap key {ref['name']}/{ref['key']}"


def _sweep_config_from_entrypoint(entrypoint: str, storage_uri: str):
    """The config a sweep entrypoint would run with, parsed by ganray's own CLI code (the
    same argparse options and loader jobs/sweep_*.py use), with $GANRAY_STORAGE replaced
    by `storage_uri` as the submitter's shell would. No Ray, no storage access."""
    import argparse

    from ganray.args import add_config_args, config_from_args
    from ganray.sweep import grid

    argv = shlex.split(entrypoint.replace("$GANRAY_STORAGE", storage_uri).replace("${GANRAY_STORAGE}", storage_uri))
    script = argv[1]
    assert re.fullmatch(r"jobs/sweep_\w+\.py", script), f"no CLI check written for {script}; add one here"
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    parser.add_argument("--no-report", action="store_true")  # ganray.sweep.main's own extra option
    cfg = config_from_args(parser.parse_args(argv[2:]))
    assert grid(cfg), "the sweep grid is empty"
    return cfg


def test_rayjob_entrypoint_is_accepted_by_ganray() -> None:
    """The RayJob's arguments load without a ConfigError (which would exit 2 on the
    cluster), the storage comes from $GANRAY_STORAGE, and TensorBoard looks at the
    experiment the sweep writes."""
    (storage_cm,) = [d for d in docs_of("ConfigMap") if d["metadata"]["name"] == "ganray-storage"]
    example_uri = "gs://ganray-example-bucket/ganray"
    for job in docs_of("RayJob"):
        cfg = _sweep_config_from_entrypoint(job["spec"]["entrypoint"], example_uri)
        assert cfg.storage.uri == example_uri, f"RayJob {job['metadata']['name']}: storage {cfg.storage.uri!r} does not come from $GANRAY_STORAGE"
        assert cfg.sweep.max_concurrent_trials > 0, "on a cluster autoscaled from zero, the sweep needs an explicit max_concurrent_trials"
        assert storage_cm["data"]["GANRAY_EXPERIMENT"] == cfg.experiment.name, (
            f"TensorBoard shows experiment {storage_cm['data']['GANRAY_EXPERIMENT']!r}, the sweep writes {cfg.experiment.name!r}"
        )


def test_no_secret_literals() -> None:
    problems = []
    for path in manifest_files():
        problems += [f"{path.name}: {p}" for p in secret_problems(path.read_text(), load_docs(path))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("planted", [
    "env: [{name: AWS_SECRET_ACCESS_KEY, value: abc}]",
    "env: [{name: DB_PASSWORD, value: hunter2}]",
    "env: [{name: GOOGLE_APPLICATION_CREDENTIALS, value: /var/key.json}]",
    "env: [{name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}]",
    "data: {api_key: s3cr3t-value}",
    "note: AKIAABCDEFGHIJKLMNOP",
    "note: '-----BEGIN RSA PRIVATE KEY-----'",
])
def test_secret_check_catches_planted_secret(planted: str) -> None:
    doc = {"kind": "ConfigMap", "metadata": {"name": "x"}, **yaml.safe_load(planted)}
    assert secret_problems(planted, [doc]), f"the secret check missed: {planted}"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}}
    assert secret_problems("", [secret])


def test_every_container_sets_requests_and_limits() -> None:
    problems = [f"{f}: {p}" for f, d in all_docs() for p in resource_problems(d)]
    assert not problems, "\n".join(problems)
    checked = sum(1 for _, d in all_docs() for _ in containers(d))
    assert checked >= 8, f"only {checked} containers found; the walk over pod specs is broken"


def test_resource_check_catches_missing_and_inverted_values() -> None:
    doc = _file_doc("tensorboard.yaml", "Deployment")
    res = doc["spec"]["template"]["spec"]["containers"][0]["resources"]
    del res["limits"]["memory"]
    res["requests"]["cpu"] = "3"  # above the 2-CPU limit
    problems = resource_problems(doc)
    assert any("limits.memory" in p for p in problems), problems
    assert any("exceeds limits.cpu" in p for p in problems), problems
    cluster = _file_doc("raycluster.yaml", "RayCluster")
    del cluster["spec"]["autoscalerOptions"]["resources"]
    assert any("autoscaler" in p for p in resource_problems(cluster))


def test_quantity_parsing() -> None:
    assert quantity("500m") == Decimal("0.5")
    assert quantity("20Gi") == 20 * 2**30
    assert quantity(2) == 2
    assert quantity("1e3") == 1000
    assert quantity("1.5G") == Decimal("1.5e9")
    with pytest.raises(ValueError):
        quantity("8 GB")


def test_nothing_exposed_outside_the_cluster() -> None:
    problems = [f"{f}: {p}" for f, d in all_docs() for p in exposure_problems(d)]
    assert not problems, "\n".join(problems)
    services = docs_of("Service")
    assert services and all(s["spec"].get("type") == "ClusterIP" for s in services), "Services should say type: ClusterIP explicitly"


@pytest.mark.parametrize("exposure", [
    ("tensorboard.yaml", "Service", lambda d: d["spec"].update(type="LoadBalancer")),
    ("tensorboard.yaml", "Service", lambda d: d["spec"].update(type="NodePort")),
    ("tensorboard.yaml", "Deployment", lambda d: d["spec"]["template"]["spec"].update(hostNetwork=True)),
    ("tensorboard.yaml", "Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(hostPort=6006)),
    ("raycluster.yaml", "RayCluster", lambda d: d["spec"]["headGroupSpec"].update(serviceType="LoadBalancer")),
    ("raycluster.yaml", "RayCluster", lambda d: d["spec"]["headGroupSpec"].update(enableIngress=True)),
    ("rayjob.sweep-zdim.yaml", "RayJob", lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"].update(serviceType="NodePort")),
    ("tensorboard.yaml", "Service", lambda d: d.update(kind="Ingress")),
], ids=["lb-service", "nodeport-service", "host-network", "host-port", "head-lb", "head-ingress", "rayjob-head-nodeport", "ingress"])
def test_exposure_check_catches_outside_access(exposure) -> None:
    file, kind, mutate = exposure
    doc = _file_doc(file, kind)
    assert not exposure_problems(doc)
    mutate(doc)
    assert exposure_problems(doc), f"exposure check missed a change to {file} {kind}"


def test_cpu_only_head_and_autoscaled_gpu_workers() -> None:
    for file, doc in ray_docs():
        for path, spec in cluster_specs(doc):
            where = f"{file} {path}"
            head = spec["headGroupSpec"]
            assert head.get("rayStartParams", {}).get("num-cpus") == "0", f"{where}: head needs rayStartParams num-cpus '0'"
            for c in head["template"]["spec"]["containers"]:
                res = c.get("resources", {})
                assert GPU not in res.get("limits", {}) and GPU not in res.get("requests", {}), f"{where}: the head must not take a GPU"
            assert spec.get("enableInTreeAutoscaling") is True, f"{where}: autoscaling should be on"
            groups = spec.get("workerGroupSpecs") or []
            assert groups, f"{where}: no worker group"
            gpu_counts = []
            for g in groups:
                gw = f"{where} group {g['groupName']}"
                assert g["minReplicas"] == 0, f"{gw}: minReplicas should be 0 (no idle GPU nodes)"
                pod = g["template"]["spec"]
                res = pod["containers"][0]["resources"]
                assert GPU in res["requests"] and res["requests"][GPU] == res["limits"].get(GPU), f"{gw}: {GPU} requests and limits should be set and equal"
                gpu_counts.append(int(res["limits"][GPU]))
                tolerated = [t for t in pod.get("tolerations", []) if t.get("key") == GPU and t.get("effect") in (None, "NoSchedule")]
                assert tolerated, f"{gw}: no toleration for the {GPU} taint"
                assert pod.get("serviceAccountName") == "ganray", f"{gw}: should run as the ganray service account"
            assert max(gpu_counts) > 1, f"{where}: no worker group for multi-GPU nodes (GPUs per pod: {gpu_counts})"
            assert head["template"]["spec"].get("serviceAccountName") == "ganray", f"{where}: head should run as the ganray service account"


def test_service_account_has_both_cloud_identities_and_no_keys() -> None:
    (sa,) = docs_of("ServiceAccount")
    annotations = sa["metadata"].get("annotations", {})
    assert annotations.get("iam.gke.io/gcp-service-account", "").endswith(".iam.gserviceaccount.com"), "GKE Workload Identity annotation missing"
    assert annotations.get("eks.amazonaws.com/role-arn", "").startswith("arn:aws:iam::"), "EKS IRSA annotation missing"
    assert "secrets" not in sa and "imagePullSecrets" not in sa
    (deployment,) = docs_of("Deployment")
    assert deployment["spec"]["template"]["spec"].get("serviceAccountName") == sa["metadata"]["name"], "TensorBoard should use the same service account"


def string_values(node: Any) -> Iterator[str]:
    """Every string value (not key, not comment) inside a loaded manifest."""
    if isinstance(node, dict):
        for value in node.values():
            yield from string_values(value)
    elif isinstance(node, list):
        for value in node:
            yield from string_values(value)
    elif isinstance(node, str):
        yield node


def test_placeholders_are_documented() -> None:
    """Values to fill in are written <UPPER_CASE>; docs/deploy.md must explain each one."""
    placeholders = sorted({p for _, d in all_docs() for v in string_values(d) for p in re.findall(r"<([A-Z][A-Z0-9_]*)>", v)})
    assert placeholders, "expected <PLACEHOLDER> values (registry, bucket, identities) in k8s/"
    doc = DEPLOY_DOC.read_text() if DEPLOY_DOC.is_file() else ""
    undocumented = [p for p in placeholders if f"<{p}>" not in doc]
    assert not undocumented, f"placeholders not explained in docs/deploy.md: {undocumented}"
