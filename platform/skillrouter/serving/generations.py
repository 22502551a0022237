"""How serving replicas learn that the corpus or the index changed, and swap in the new state without failing a
request.

A writer (the IndexAdmin deployment, or the app builder on first start) changes the corpus table and the index,
closes the index (Milvus Lite writes its segments then), and only then publishes a new *generation*: it replaces
`RUN_DIR/serving/generation.json` in one step (write, then rename). Every request a replica serves first compares
that file's identity (inode, modification time, size: one `stat` call) with the one its state was loaded from.
When it changed, the replica loads the new generation in a worker thread (for a retriever: a fresh private copy of
the Milvus Lite file, the corpus, BM25), and the request waits for it up to `serving.reload_wait_s`, so a client
that changed the index reads its own write. Meanwhile and past that wait, requests are answered from the previous
state, which is closed only when the last request using it is done. A load that fails leaves the previous state
serving and is retried a few seconds later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
GENERATION_FILE = "generation.json"
RETRY_FAILED_LOAD_S = 5.0
logger = logging.getLogger("ray.serve")


def read_generation(path: Path) -> int:
    """The published generation number; 0 before the first publication."""
    try:
        return int(json.loads(Path(path).read_text())["generation"])
    except FileNotFoundError:
        return 0


def publish(path: Path, **info) -> int:
    """Publish the next generation (after the corpus and the index are written); returns its number."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generation = read_generation(path) + 1
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"generation": generation, "time": time.time(), **info}) + "\n")
    tmp.replace(path)
    return generation


def stamp(path: Path) -> tuple[int, int, int] | None:
    """The identity of the generation file: a rename gives it a new inode, so no edit goes unseen."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@dataclass
class _Slot(Generic[T]):
    value: T
    generation: int
    stamp: tuple[int, int, int] | None
    users: int = 0
    retired: bool = False


class Generations(Generic[T]):
    """The state a replica serves from, reloaded when the published generation changes.

    `load(previous)` builds the state of the current generation (in a worker thread after the first) and may
    reuse parts of `previous`, such as a loaded model; `close(state)` releases a replaced state once no request
    uses it. `on_load(generation, ok)` is told of every load (metrics).
    """

    def __init__(self, path: Path, load: Callable[[T | None], T], close: Callable[[T], None] | None = None,
                 wait_s: float = 5.0, on_load: Callable[[int, bool], None] | None = None):
        self.path, self.wait_s = Path(path), wait_s
        self._load, self._close, self._on_load = load, close, on_load or (lambda generation, ok: None)
        current = stamp(self.path)
        self._slot = _Slot(load(None), read_generation(self.path), current)
        self._on_load(self._slot.generation, True)
        self._task: asyncio.Task | None = None
        self._failed: tuple[tuple | None, float] | None = None  # (stamp, retry time) of a failed load

    @property
    def generation(self) -> int:
        return self._slot.generation

    @property
    def current(self) -> T:
        return self._slot.value

    @asynccontextmanager
    async def use(self) -> AsyncIterator[tuple[T, int]]:
        """The newest loaded state and its generation, held until the block ends."""
        await self.refresh()
        slot = self._slot
        slot.users += 1
        try:
            yield slot.value, slot.generation
        finally:
            slot.users -= 1
            if slot.retired and slot.users == 0:
                await self._dispose(slot)

    async def refresh(self) -> None:
        """Start loading a newly published generation, and wait for it up to `wait_s`."""
        current = stamp(self.path)
        if current == self._slot.stamp:
            return
        if self._task is None:
            if self._failed and self._failed[0] == current and time.monotonic() < self._failed[1]:
                return
            self._task = asyncio.get_running_loop().create_task(self._reload(current))
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.wait_s)
        except asyncio.TimeoutError:
            pass  # answered from the previous generation; the load goes on

    async def _reload(self, current: tuple | None) -> None:
        generation = read_generation(self.path)
        started = time.perf_counter()
        try:
            value = await asyncio.to_thread(self._load, self._slot.value)
        except Exception:
            logger.exception("loading index generation %d failed; still serving generation %d", generation,
                             self._slot.generation)
            self._failed = (current, time.monotonic() + RETRY_FAILED_LOAD_S)
            self._on_load(generation, False)
            return
        finally:
            self._task = None
        old, self._slot = self._slot, _Slot(value, generation, current)
        self._failed = None
        self._on_load(generation, True)
        logger.info("now serving index generation %d (loaded in %.2f s)", generation, time.perf_counter() - started)
        old.retired = True
        if old.users == 0:
            await self._dispose(old)

    async def _dispose(self, slot: _Slot[T]) -> None:
        if self._close is not None:
            try:
                await asyncio.to_thread(self._close, slot.value)
            except Exception:
                logger.exception("closing index generation %d failed", slot.generation)


def private_dir(root: Path) -> Path:
    """A new directory for this process under `root` (a replica's Lite copy); directories left by processes that
    are gone are removed first."""
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        pid = child.name.split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(child, ignore_errors=True)
    out = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
