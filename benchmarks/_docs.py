"""Shared by the benchmark scripts: replace one generated block of ``docs/benchmarks.md``."""

from __future__ import annotations

from pathlib import Path

from stabletrain.files import atomic_write_text

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_block(start: str, end: str, lines: list[str], heading: str) -> Path:
    """Put ``lines`` between the ``start`` and ``end`` markers, adding them under ``heading`` if absent."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    body = "\n".join(line for line in lines if line not in (start, end))
    atomic_write_text(DOC, f"{head}{start}\n{body}\n{end}{tail}")
    return DOC
