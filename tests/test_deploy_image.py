"""The Dockerfile's recipe, run as the image runs it but without a container engine: its
instructions are read from the Dockerfile itself and carried out in a temporary directory
(COPY from the checkout as .dockerignore filters it, RUN with the image's absolute paths moved
under that directory), and the ENTRYPOINT then answers `serve --help` from the venv they built.
Every install is pinned by hash."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
# The image's absolute paths the recipe writes to, moved under the test's directory.
IMAGE_PATHS = ("/opt/extauthz", "/tmp/build", "/dist", "/src")  # noqa: S108 (the image's, not ours)
KNOWN = {"ARG", "FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "EXPOSE", "HEALTHCHECK",
         "ENTRYPOINT", "CMD"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()
                                            if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for word, rest in instructions(text):
        if word == "FROM":
            result.append([])
        elif result:
            result[-1].append((word, rest))
    return result


def ignored_by_dockerignore() -> Callable[[str, list[str]], set[str]]:
    patterns = [p.strip().removeprefix("**/") for p in
                (ROOT / ".dockerignore").read_text().splitlines() if p.strip()
                and not p.startswith("#")]

    def ignore(_directory: str, names: list[str]) -> set[str]:
        return {n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)}
    return ignore


class Recipe:
    """The build stage carried out under ``work``; the final stage's ENTRYPOINT from it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        shim = work / "shim"  # `python` in the image is the base image's CPython
        shim.mkdir()
        (shim / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
        self.env = {"PATH": f"{shim}:{os.environ['PATH']}", "HOME": str(work),
                    "PIP_CONFIG_FILE": os.environ.get("PIP_CONFIG_FILE", "")}
        self.env = {k: v for k, v in self.env.items() if v}
        for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
            if name in os.environ:  # this machine's package index, as the image build's
                self.env[name] = os.environ[name]
        self.cwd = work
        self.entrypoint: list[str] = []
        self.cmd: list[str] = []

    def here(self, text: str) -> str:
        """The image's absolute paths as they are under ``work``."""
        for path in IMAGE_PATHS:
            text = re.sub(rf"(?<![\w./-]){re.escape(path)}(?=[/\s]|$)",
                          str(self.work / path.lstrip("/")), text)
        return text

    def run(self, text: str) -> None:
        build, final = stages(text)
        for word, rest in build:
            assert word in KNOWN, f"the recipe does not know {word}: teach it"
            if word == "ENV":
                for pair in rest.split():
                    key, _, value = pair.partition("=")
                    self.env[key] = value
            elif word == "WORKDIR":
                self.cwd = Path(self.here(rest))
                self.cwd.mkdir(parents=True, exist_ok=True)
            elif word == "COPY":
                *sources, target = rest.split()
                self.copy(sources, target)
            elif word == "RUN":
                done = subprocess.run(["/bin/sh", "-c", self.here(rest)], cwd=self.cwd, env=self.env,
                                      capture_output=True, text=True, timeout=900, check=False)
                assert done.returncode == 0, (rest, done.stdout[-3000:], done.stderr[-3000:])
        for word, rest in final:
            assert word in KNOWN, f"the recipe does not know {word}: teach it"
            if word == "COPY":
                assert rest == "--from=build /opt/extauthz /opt/extauthz", rest  # in place here
            elif word == "ENV":
                for pair in rest.split():
                    key, _, value = pair.partition("=")
                    self.env[key] = self.here(value.replace("$PATH", self.env["PATH"]))
            elif word == "ENTRYPOINT":
                self.entrypoint = json.loads(rest)
            elif word == "CMD":
                self.cmd = json.loads(rest)

    def copy(self, sources: list[str], target: str) -> None:
        """Docker's COPY: a directory's contents into the target, a file into a target that
        ends with "/" (or as the target)."""
        destination = Path(self.here(target)) if target.startswith("/") else self.cwd / target
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, destination, dirs_exist_ok=True,
                                ignore=ignored_by_dockerignore())
            elif target.endswith("/"):
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination / origin.name)
            else:
                shutil.copy2(origin, destination)

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        [program, *rest] = self.entrypoint
        found = shutil.which(program, path=self.env["PATH"])
        assert found, f"{program} is not on the image's PATH"
        return subprocess.run([found, *rest, *args], env=self.env, cwd=self.work,
                              capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Recipe:
    made = Recipe(tmp_path_factory.mktemp("recipe"))
    made.run(DOCKERFILE.read_text())
    return made


def test_the_image_recipe_builds_a_venv_whose_entrypoint_serves_help(recipe: Recipe) -> None:
    assert recipe.entrypoint == ["extauthz"]
    assert recipe.cmd == ["serve"]
    done = recipe.command(*recipe.cmd, "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--grpc-listen", "--http-listen", "--check-http-listen", "--admin-listen"):
        assert option in done.stdout, option
    # it ran from the recipe's venv, with the wheel it built and nothing of the checkout
    python = recipe.work / "opt" / "extauthz" / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import extauthz, sys; print(extauthz.__file__)"],
                           capture_output=True, text=True, cwd=recipe.work, timeout=60, check=True)
    assert where.stdout.startswith(str(recipe.work / "opt" / "extauthz" / "lib"))
    assert not (recipe.work / "src" / "tests").exists()  # .dockerignore kept the suite out
    [wheel] = (recipe.work / "dist").glob("extauthz-*.whl")
    assert wheel.name.startswith("extauthz-")


def test_every_install_in_the_image_is_pinned_by_hash() -> None:
    runs = [rest for stage in stages(DOCKERFILE.read_text()) for word, rest in stage
            if word == "RUN"]
    installs = [part.strip() for rest in runs for part in rest.split("&&") if "pip install" in part]
    assert installs
    locks = set()
    for install in installs:
        if "--no-deps" in install:  # the wheel the stage just built, from its own files
            assert re.search(r"--no-deps /dist/extauthz-\*\.whl$", install), install
            continue
        lock = re.search(r"--require-hashes -r (\S+)$", install)
        assert lock, f"not pinned by hash: {install}"
        locks.add(lock.group(1))
    assert locks == {"requirements.lock", "requirements-build.lock"}
    for name in locks:
        text = (ROOT / name).read_text()
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}$", text, re.M)
        assert pins
        assert len(pins) == len(re.findall(r"^\S", text, re.M)) - 2  # two comment lines


def test_the_build_lock_holds_what_the_build_stage_asks_for() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from lock import BUILD
    finally:
        sys.path.pop(0)
    locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$",
                             (ROOT / "requirements-build.lock").read_text(), re.M))
    for requirement in BUILD:
        name, version = requirement.split("==")
        assert locked.get(name) == version, requirement


def test_the_image_exposes_the_ports_the_manifests_use() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    [exposed] = [rest for word, rest in final if word == "EXPOSE"]
    assert exposed.split() == ["9001", "9002", "9003", "9004"]
