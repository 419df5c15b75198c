"""requirements.lock against pyproject.toml's ranges and against this environment: the install is what was tested."""

import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PROJECT = "learning-pipelines"
EXTRAS = ("dev", "k8s")  # the lock covers the project with all its extras
OUTSIDE_THE_LOCK = {"torch", PROJECT}  # TORCH_INSTALL installs the CPU build; the project itself is editable
NEVER_LOCKED = ("torch", "triton", "nvidia-")  # a torch from PyPI and the CUDA packages it brings


def parse_lock(text: str) -> dict[str, str]:
    pins = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        assert separator and version and Version(version), f"requirements.lock line {number}: {line!r} is not NAME==VERSION"
        pins[canonicalize_name(name)] = version
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(text) for text in project["dependencies"]]
    for extra in EXTRAS:
        wanted += [Requirement(text) for text in project["optional-dependencies"][extra]]
    return wanted


def disagreements(pins: dict[str, str], wanted: list[Requirement]) -> list[str]:
    """Each requirement of pyproject.toml the lock does not meet, as a line naming both sides."""
    found = []
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name in OUTSIDE_THE_LOCK:
            continue
        if name not in pins:
            found.append(f"{requirement}: not in requirements.lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            found.append(f"{requirement}: requirements.lock has {pins[name]}")
    return found


def forbidden(pins: dict[str, str]) -> list[str]:
    return sorted(name for name in pins if name.startswith(NEVER_LOCKED))


def applies(requirement: Requirement, extra: str = "") -> bool:
    return requirement.marker is None or requirement.marker.evaluate({**default_environment(), "extra": extra})


def closure(wanted: list[Requirement]) -> set[str]:
    """Every distribution the requirements reach through the installed packages' own requirements."""
    reached: set[str] = set()
    followed: set[tuple[str, str]] = set()  # (distribution, extra) whose requirements were added; "" the base ones
    todo = [requirement for requirement in wanted if applies(requirement)]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        reached.add(name)
        for extra in ("", *requirement.extras):
            if (name, extra) in followed:
                continue
            followed.add((name, extra))
            inner = [Requirement(text) for text in metadata.requires(name) or []]
            todo += [requirement for requirement in inner if applies(requirement, extra)]
    return reached


def test_the_lock_meets_every_range_of_pyproject_and_holds_no_torch():
    pins = parse_lock(LOCK.read_text())

    assert disagreements(pins, project_requirements()) == []
    assert forbidden(pins) == []


def test_a_lock_that_disagrees_with_pyproject_or_holds_cuda_packages_is_named():
    pins = {"sentry-sdk": "3.0.1", "numpy": "2.4.6", "nvidia-cublas-cu12": "12.8.4.1", "torch": "2.13.0"}
    wanted = [Requirement("sentry-sdk>=2.40,<3"), Requirement("numpy>=1.26,<3"), Requirement("structlog>=25,<27")]

    assert disagreements(pins, wanted) == ["sentry-sdk<3,>=2.40: requirements.lock has 3.0.1",
                                           "structlog<27,>=25: not in requirements.lock"]
    assert forbidden(pins) == ["nvidia-cublas-cu12", "torch"]


def test_this_environment_is_exactly_the_lock():
    pins = parse_lock(LOCK.read_text())
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}

    assert {name: installed.get(name) for name in pins} == pins
    assert set(installed) - set(pins) - OUTSIDE_THE_LOCK == set()
    # Nothing the lock holds is unneeded, nothing needed is missing from it.
    assert closure(project_requirements()) - OUTSIDE_THE_LOCK == set(pins) - {"pip"}


def test_a_changed_lock_or_pyproject_reinstalls_on_the_next_make():
    for changed in ("requirements.lock", "pyproject.toml"):
        plan = subprocess.run(["make", "-n", "-W", changed, "install"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
        assert "pip install -q -r requirements.lock" in plan, plan
