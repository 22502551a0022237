"""Layer 1: the same skill name after normalisation (case, separators and plurals)."""

from __future__ import annotations

from skillrouter.querygen.leak_guard import normalise


def normalise_name(name: str) -> str:
    """`PDF-Tools`, `pdf_tools` and `pdf tool` all become `pdf-tool`."""
    return "-".join(normalise(name))
