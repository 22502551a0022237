"""The main command's console without Ray's benign lines, whoever writes them.

`raycluster.quiet_console` filters Ray's Python loggers, but only once Ray has started, and Ray's native code
(the core worker's C++ log) writes to the process's stderr directly. `filtered_stderr` puts a pipe in place of
file descriptor 2 for the length of a job: every line written there, by Python or native code, goes in full to a
log file, and to the terminal unless it is one of `raycluster.BENIGN` or `NATIVE_BENIGN`. Progress bars (a line
still open, redrawn with carriage returns) pass through as they are drawn.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from skillrouter.common.raycluster import BENIGN

# Lines Ray's C++ core worker writes to the driver's stderr about things that are fine here, each with why. Its
# session log (RAY_TMPDIR/ray/session_latest/logs/python-core-driver-*.log) keeps them too.
NATIVE_BENIGN = {
    "has constructor arguments in the object store": "an E-level line for each Ray Data actor pool (its actors may "
                                                     "restart and their arguments live in the object store, "
                                                     "ray-project/ray#53727): the job holds those arguments until "
                                                     "the pool is done",
}
IDLE_FLUSH_S = 0.2  # an unfinished line (a progress bar) reaches the terminal after this long without more


def _pump(read_fd: int, terminal_fd: int, log, patterns: tuple[bytes, ...]) -> None:
    """Copy the pipe to `log` in full and to the terminal without the lines holding one of `patterns`."""
    def show(data: bytes) -> None:
        try:
            while data:
                data = data[os.write(terminal_fd, data):]
        except OSError:  # the terminal is gone: keep draining the pipe, or the job's writes would block
            pass

    pending = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], IDLE_FLUSH_S)
        chunk = os.read(read_fd, 1 << 16) if ready else None
        if chunk == b"":  # every writer closed: the job is over
            break
        if chunk:
            log.write(chunk)
            log.flush()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            show(b"".join(line + b"\n" for line in lines if not any(p in line for p in patterns)))
        if pending and chunk is None:  # a line left open (a bar drawn last)
            show(pending)
            pending = b""
        elif b"\r" in pending:  # a bar being redrawn: up to its last carriage return
            cut = pending.rindex(b"\r") + 1
            show(pending[:cut])
            pending = pending[cut:]
    show(pending)


@contextmanager
def filtered_stderr(log_path: str | Path, benign: Iterable[str] = (*BENIGN, *NATIVE_BENIGN)) -> Iterator[Path]:
    """Within the block, file descriptor 2 is a pipe: its lines go to `log_path` (appended, after a header) and to
    the original stderr unless they contain one of `benign`. Restored when the block ends."""
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.open("ab")
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n".encode())
    patterns = tuple(text.encode() for text in benign)
    sys.stderr.flush()
    terminal = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, terminal, log, patterns), name="console-filter", daemon=True)
    pump.start()
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # the pipe's last writer closes: the pump drains it and ends
        pump.join(timeout=5)
        os.close(terminal)
        os.close(read_fd)
        log.close()
