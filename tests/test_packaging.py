"""The lock file pins every dependency pyproject.toml declares, within its range, and no CUDA build of torch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    return [r for r in requirements if canonicalize_name(r.name) != "clawtune"]


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    pins = locked()
    problems = []
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue  # installed first by `make install`, kept out of the lock on purpose
        if name not in pins:
            problems.append(f"{requirement} is not in requirements.lock: run `make lock`")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"requirements.lock pins {name}=={pins[name]}, outside {requirement}: run `make lock`")
    assert not problems, "\n".join(problems)


def test_the_lock_brings_no_torch_and_no_cuda_packages() -> None:
    pins = locked()
    assert "torch" not in pins
    text = (ROOT / "requirements.lock").read_text()
    assert "file://" not in text, "requirements.lock names a local path (pip-compile's self-reference): run `make lock`"
    cuda = sorted(name for name in pins if name.startswith(("nvidia-", "cuda-", "triton")))
    assert not cuda, f"requirements.lock would download CUDA packages: {cuda}"


def test_directly_imported_packages_are_declared() -> None:
    """numpy, jinja2 and huggingface_hub are imported by clawtune itself, so they are declared, not borrowed."""
    names = {canonicalize_name(r.name) for r in declared()}
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "clawtune").rglob("*.py"))
    for module, distribution in {"numpy": "numpy", "jinja2": "jinja2", "huggingface_hub": "huggingface-hub"}.items():
        if re.search(rf"^\s*(import|from) {module}\b", source, re.MULTILINE):
            assert distribution in names, (
                f"clawtune imports {module} but pyproject.toml does not declare {distribution}"
            )
