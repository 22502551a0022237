"""Tables: plain text for the terminal (what the CLI and the jobs print), and Markdown for reports."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], floatfmt: str = ".3f") -> str:
    def cell(v: object) -> str:
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], floatfmt: str = ".1f",
                   right: Sequence[bool] | None = None) -> str:
    """A GitHub-flavoured Markdown table, `|` in cells escaped. Columns are right-aligned where `right` says, by
    default where every cell is a number."""
    def cell(v: object) -> str:
        return format(v, floatfmt) if isinstance(v, float) else str(v).replace("|", "\\|")

    numeric = right or [bool(rows) and all(isinstance(row[i], (int, float)) for row in rows)
                        for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
