"""The command blocks of a Markdown page, for the tests that run them.

A command block is a fenced block tagged sh, bash, shell or console, or an untagged one
whose first line starts with "$ ". ``<!-- not run: why -->`` on the line above its fence
marks one that no test runs. A ```json block right after it is its expected answer; a
non-command block whose first line is "# NAME" defines the file NAME.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->\s*$")
FILE_HEADER = re.compile(r"#\s*([\w./-]+\.\w+)\s*$")
SHELLS = {"sh", "bash", "shell", "console"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    text: str
    not_run: str | None
    answer: str | None  # the ```json block that follows, if any

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def console(self) -> bool:
        return self.lang == "console" or self.text.startswith("$ ")


def blocks(page: Path) -> tuple[list[Block], dict[str, str]]:
    """The page's command blocks, and the files its "# NAME" blocks define."""
    text = page.read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    found, files = [], {}
    for i, fence in enumerate(fences):
        lang, body = fence.group(1), fence.group(2)
        header = FILE_HEADER.fullmatch(body.split("\n", 1)[0])
        if header and lang not in SHELLS:
            files[header.group(1)] = body
        if lang not in SHELLS and not (lang == "" and body.startswith("$ ")):
            continue
        above = text[: fence.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = NOT_RUN.search(above)
        nxt = fences[i + 1] if i + 1 < len(fences) else None
        answer = None
        if nxt and nxt.group(1) == "json" and not text[fence.end() : nxt.start()].strip():
            answer = nxt.group(2)
        line = text[: fence.start()].count("\n") + 1
        found.append(Block(page, line, lang, body, mark and mark.group(1), answer))
    return found, files
