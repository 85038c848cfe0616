"""Checks on the Dockerfile that need no Docker engine (none runs on these machines).

What a build would catch late, caught here: a COPY of a path that is missing or
excluded by .dockerignore, an entrypoint that pyproject.toml does not install, a
floating base image tag, a final stage that runs as root or still builds things.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def logical_lines(text: str) -> list[str]:
    """Dockerfile lines with comments dropped and backslash continuations joined."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (before the first FROM) and the build stages."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, f"cannot parse FROM {rest!r}"
            stages.append(Stage(image=m.group(1), name=m.group(2)))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def copy_sources(rest: str) -> list[str]:
    """Sources of a COPY from the build context; [] for COPY --from=<stage>."""
    parts = json.loads(rest) if rest.startswith("[") else rest.split()
    if any(p.startswith("--from") for p in parts):
        return []
    parts = [p for p in parts if not p.startswith("--")]
    return parts[:-1]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes.

    A path is also excluded when one of its parent directories is matched.
    """
    path = path.rstrip("/")
    prefixes = [path[: m.start()] for m in re.finditer("/", path)] + [path]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


def test_base_images_are_pinned(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    args, stages = dockerfile
    names = {s.name for s in stages if s.name}
    for stage in stages:
        image = expand(stage.image, args)
        if image in names:
            continue
        pinned_digest = re.search(r"@sha256:[0-9a-f]{64}$", image)
        # a full x.y.z version plus a named Debian release, e.g. 3.11.13-slim-bookworm
        pinned_tag = re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w.-]*(bookworm|trixie)", image)
        assert pinned_digest or pinned_tag, f"base image {image!r} is not pinned"


def test_copy_sources_exist_and_are_not_dockerignored(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [src for s in stages for kw, rest in s.instructions if kw == "COPY"
               for src in copy_sources(rest)]
    assert sources, "the Dockerfile copies nothing from the build context"
    for src in sources:
        assert (ROOT / src).exists(), f"COPY source {src} does not exist"
        assert not dockerignore_excludes(src, patterns), f"COPY source {src} is .dockerignored"
    # and the package itself is in the context, not only its directory
    assert not dockerignore_excludes("operator/headroom/cli.py", patterns)


def test_readme_and_package_sources_cover_what_pyproject_needs(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {src.rstrip("/") for s in stages for kw, rest in s.instructions if kw == "COPY"
              for src in copy_sources(rest)}
    assert "pyproject.toml" in copied
    assert pyproject["project"]["readme"] in copied
    for where in pyproject["tool"]["setuptools"]["packages"]["find"]["where"]:
        assert where.rstrip("/") in copied


def test_entrypoint_is_a_console_script(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    entrypoints = [rest for kw, rest in final.instructions if kw == "ENTRYPOINT"]
    assert entrypoints, "the final stage has no ENTRYPOINT"
    command = json.loads(entrypoints[-1])[0]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command in scripts, f"ENTRYPOINT {command!r} is not a console script in pyproject"


def test_final_stage_is_non_root_and_builds_nothing(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2, "expected a multi-stage build"
    final = stages[-1]
    users = [rest for kw, rest in final.instructions if kw == "USER"]
    assert users, "the final stage runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot)"
    for kw, rest in final.instructions:
        if kw == "RUN":
            assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", rest), (
                f"the final stage must not install or build: RUN {rest}"
            )
        if kw == "COPY":
            assert "--from=" in rest, f"the final stage copies from the context: COPY {rest}"


@pytest.mark.parametrize(
    ("path", "patterns", "excluded"),
    [
        ("operator", ["*", "!operator/"], False),
        ("operator/headroom/x.py", ["*", "!operator/"], False),
        ("tests/x.py", ["*", "!operator/"], True),
        ("operator/a/__pycache__", ["*", "!operator/", "**/__pycache__"], True),
        ("README.md", [], False),
    ],
)
def test_dockerignore_matcher(path: str, patterns: list[str], excluded: bool) -> None:
    assert dockerignore_excludes(path, patterns) is excluded
