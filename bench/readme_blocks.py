"""Numbers in the READMEs written by the command that measured them.

A block is the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in a markdown file;
`write_block` replaces it (the markers stay), so a re-run updates the README instead of someone
retyping its numbers.
"""

from __future__ import annotations

from pathlib import Path


def write_block(path: Path, name: str, text: str) -> None:
    """Replace block `name` of the markdown file `path` with `text`.

    Raises:
        ValueError: the file has no such block (add the two marker lines where it belongs).
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    content = path.read_text(encoding="utf-8")
    if content.count(start) != 1 or content.count(end) != 1:
        raise ValueError(f"{path} needs one '{start}' line and one '{end}' line")
    head, rest = content.split(start)
    _, tail = rest.split(end)
    path.write_text(f"{head}{start}\n{text.strip()}\n{end}{tail}", encoding="utf-8")
