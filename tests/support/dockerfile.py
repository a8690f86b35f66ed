"""Follow a Dockerfile without Docker (this machine has no engine), so that CI exercises the
recipe the image is built with.

Each stage gets a directory that stands for its filesystem root: absolute paths written in the
Dockerfile (WORKDIR, ENV values, COPY destinations, CMD) are moved under it, so ``/app`` becomes
``<stage>/app``. COPY takes files from the build context (minus .dockerignore) or from an
earlier stage; a path a stage did not produce comes from its base image, which the caller
provides (``base_files``). RUN lines run with ``sh -c`` in the stage's working directory,
except those the caller names as image-only (package installs, users), which are recorded.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    exposed: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def path(self, image_path: str) -> Path:
        """Where an absolute path of the image lives in this stage's directory."""
        return self.root / image_path.lstrip("/")

    def cwd(self) -> Path:
        return self.path(self.workdir)


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def ignore_matcher(context: Path) -> Callable[[str], bool]:
    """Whether a context-relative path is excluded by .dockerignore (no ``!`` exceptions)."""
    patterns = []
    ignore = context / ".dockerignore"
    for line in ignore.read_text().splitlines() if ignore.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions in .dockerignore are not followed here"
        regex = ""
        for token in re.split(r"(\*\*/|\*|\?)", line.strip("/")):
            regex += {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        patterns.append(re.compile(regex + "$"))

    def ignored(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(p.match(prefix) for p in patterns for prefix in prefixes)

    return ignored


class Recipe:
    """Runs the stages of ``dockerfile`` under ``workspace``."""

    def __init__(
        self,
        dockerfile: Path,
        context: Path,
        workspace: Path,
        base_files: Mapping[str, Path],
        image_only: Callable[[str], bool],
        host_env: Mapping[str, str],
    ) -> None:
        self.instructions = parse(dockerfile.read_text())
        self.context = context
        self.workspace = workspace
        self.base_files = base_files
        self.image_only = image_only
        self.host_env = dict(host_env)
        self.ignored = ignore_matcher(context)
        self.stages: list[Stage] = []
        self.log: list[str] = []

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def build(self) -> None:
        for ins in self.instructions:
            handler = getattr(self, f"_{ins.keyword.lower()}", None)
            if handler is None:
                raise AssertionError(f"Dockerfile line {ins.line}: {ins.keyword} is not followed")
            handler(ins)

    # -- instructions -------------------------------------------------------------------------

    def _from(self, ins: Instruction) -> None:
        words = ins.args.split()
        name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"s{len(self.stages)}"
        root = self.workspace / name
        root.mkdir(parents=True)
        self.stages.append(Stage(name, words[0], root, env=dict(self.host_env)))

    def _env(self, ins: Instruction) -> None:
        stage = self.final
        for pair in shlex.split(ins.args):
            key, _, value = pair.partition("=")
            stage.env[key] = self._expand(self._map_paths(stage, value), stage.env)

    def _workdir(self, ins: Instruction) -> None:
        stage = self.final
        stage.workdir = os.path.join(stage.workdir, ins.args)
        stage.cwd().mkdir(parents=True, exist_ok=True)

    def _copy(self, ins: Instruction) -> None:
        stage = self.final
        words = shlex.split(ins.args)
        source_stage = None
        while words[0].startswith("--"):
            flag = words.pop(0)
            if flag.startswith("--from="):
                source_stage = flag.split("=", 1)[1]
            else:
                raise AssertionError(f"Dockerfile line {ins.line}: COPY {flag} is not followed")
        *sources, dest = words
        target = stage.path(os.path.join(stage.workdir, dest))
        for source in sources:
            if source_stage is None:
                self._copy_context(source, target, dest.endswith("/") or len(sources) > 1)
            else:
                self._copy_stage(self.stage(source_stage), source, target, dest.endswith("/"))

    def _run(self, ins: Instruction) -> None:
        stage = self.final
        if self.image_only(ins.args):
            stage.skipped.append(ins.args)
            return
        self.log.append(f"[{stage.name}] RUN {ins.args}")
        result = subprocess.run(
            ["sh", "-c", ins.args],
            cwd=stage.cwd(),
            env=stage.env,
            capture_output=True,
            text=True,
        )
        self.log.append(result.stdout + result.stderr)
        if result.returncode != 0:
            raise AssertionError(
                f"Dockerfile line {ins.line}: RUN {ins.args} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def _user(self, ins: Instruction) -> None:
        self.final.user = ins.args

    def _expose(self, ins: Instruction) -> None:
        self.final.exposed.extend(ins.args.split())

    def _stopsignal(self, ins: Instruction) -> None:
        assert ins.args == "SIGTERM", ins.args

    def _healthcheck(self, ins: Instruction) -> None:
        _, _, command = ins.args.partition(" CMD ")
        self.final.healthcheck = ["sh", "-c", command]

    def _cmd(self, ins: Instruction) -> None:
        stage = self.final
        stage.cmd = [self._map_paths(stage, word) for word in json.loads(ins.args)]

    # -- helpers ------------------------------------------------------------------------------

    def _map_paths(self, stage: Stage, value: str) -> str:
        """Absolute paths in a value (``:``-separated lists too) moved under the stage root."""
        if "://" in value:  # a URL, not a path
            return value
        return ":".join(
            str(stage.path(part)) if part.startswith("/") else part for part in value.split(":")
        )

    @staticmethod
    def _expand(value: str, env: Mapping[str, str]) -> str:
        return re.sub(
            r"\$\{?(\w+)\}?",
            lambda m: env.get(m.group(1), ""),
            value,
        )

    def _copy_context(self, source: str, target: Path, into_dir: bool) -> None:
        origin = self.context / source
        relative = source.rstrip("/")
        assert not self.ignored(relative), f"COPY {source}: excluded by .dockerignore"
        if origin.is_dir():  # the directory's contents, minus what .dockerignore excludes
            for path in sorted(origin.rglob("*")):
                rel = path.relative_to(self.context).as_posix()
                if path.is_file() and not self.ignored(rel):
                    out = target / path.relative_to(origin)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, out)
            return
        out = target / origin.name if into_dir else target
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, out)

    def _copy_stage(self, source: Stage, path: str, target: Path, into_dir: bool) -> None:
        origin = source.path(path)
        if not origin.exists():
            assert path in self.base_files, f"COPY --from={source.name} {path}: not produced"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(self.base_files[path])
            return
        if origin.is_dir():
            shutil.copytree(origin, target, symlinks=True, dirs_exist_ok=True)
        else:
            out = target / origin.name if into_dir else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, out)
