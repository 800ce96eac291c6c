"""
The Dockerfile as data: its final stage's instructions, and what a process started from it gets
(ENV, ENTRYPOINT, HEALTHCHECK), for the tests of the image and of the deployment files.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.haproxy import free_port


#: Where the image keeps its virtual environment; here, this interpreter's.
IMAGE_VENV = "/opt/venv"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


@dataclass(frozen=True)
class Image:
    """The final stage of the Dockerfile, and how many stages it has."""

    stages: int
    base: str
    instructions: tuple[Instruction, ...]

    def only(self, keyword: str) -> str:
        """The arguments of the stage's single *keyword* instruction."""
        (found,) = [i.arguments for i in self.instructions if i.keyword == keyword]
        return found

    def env(self) -> dict[str, str]:
        """
        The stage's ENV, as a process here gets it: the image's venv is this one, and whichever
        variable sets the listen address says a free loopback port.
        """
        values = {}
        for instruction in self.instructions:
            if instruction.keyword == "ENV":
                for pair in shlex.split(instruction.arguments):
                    name, _, value = pair.partition("=")
                    values[name] = value.replace(IMAGE_VENV, sys.prefix).replace(
                        "$PATH", os.environ["PATH"]
                    )
                    if name.endswith("SERVER_LISTEN"):
                        values[name] = f"127.0.0.1:{free_port()}"
        return values

    def env_as_written(self) -> dict[str, str]:
        """The stage's ENV exactly as the Dockerfile writes it."""
        return dict(
            pair.partition("=")[::2]
            for instruction in self.instructions
            if instruction.keyword == "ENV"
            for pair in shlex.split(instruction.arguments)
        )

    def entrypoint(self) -> list[str]:
        """The exec-form ENTRYPOINT."""
        return list(json.loads(self.only("ENTRYPOINT")))

    def healthcheck(self) -> list[str]:
        """The exec-form command of the HEALTHCHECK."""
        _, _, command = self.only("HEALTHCHECK").partition(" CMD ")
        return list(json.loads(command))


def read_image(path: Path) -> Image:
    """The final stage of the Dockerfile at *path*."""
    found = instructions(path.read_text())
    starts = [n for n, i in enumerate(found) if i.keyword == "FROM"]
    final = found[starts[-1]]
    return Image(len(starts), final.arguments.split()[0], tuple(found[starts[-1] + 1 :]))


def instructions(text: str) -> list[Instruction]:
    """Every instruction of a Dockerfile, without comments."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [Instruction(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]
