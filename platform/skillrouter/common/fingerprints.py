"""Short content fingerprints: what the pipeline's stages and the caches compare to know their inputs changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def digest(*parts) -> str:
    """A 16-hex fingerprint of JSON-able parts (pydantic sections are dumped first)."""
    dumped = [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts]
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()[:16]


def files_version(path: str | Path, ignore: tuple[str, ...] = ()) -> str:
    """A file's or a folder's version by its files' names, sizes and modification times (no reading: cheap for
    model weights and skill trees); empty when the path does not exist. Files named in `ignore` (a model's card)
    do not count."""
    path = Path(path).expanduser()
    if not path.exists():
        return ""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.name not in ignore)
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def content_version(path: str | Path) -> str:
    """A file's version by its bytes (for outputs a stage rewrites with the same content, such as a table)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
