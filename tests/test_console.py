"""What the jobs show on the console: Ray's lines about things that are fine stay in its log files only."""

import io
import logging
import subprocess
import sys

from skillrouter.common.raycluster import quiet_console


def test_benign_ray_lines_leave_the_console_and_stay_in_the_log_file(tmp_path):
    logger = logging.getLogger("ray.serve.test_quiet")
    console, log_file = io.StringIO(), tmp_path / "serve.log"
    logger.addHandler(logging.StreamHandler(console))
    logger.addHandler(logging.FileHandler(log_file))
    logger.propagate = False
    quiet_console()
    logger.warning("ServeController.graceful_shutdown failed: the actor was killed by ray.kill")
    logger.warning("Deployment 'Retriever' failed to start")
    assert console.getvalue() == "Deployment 'Retriever' failed to start\n"
    assert "graceful_shutdown" in log_file.read_text() and "failed to start" in log_file.read_text()

CHILD = r"""
import logging, os, sys, time
from skillrouter.common.console import filtered_stderr
with filtered_stderr(sys.argv[1]):
    logging.getLogger("ray").warning("Token authentication is enabled for this Ray cluster.")
    os.write(2, b"[2026-12-05 E 1 1] core_worker.cc:2465: Actor ... has constructor arguments in the object store\n")
    print("a real warning", file=sys.stderr, flush=True)
    os.write(2, b"bar  10%\rbar  50%")  # a progress bar, still open
    time.sleep(0.5)
    os.write(2, b"\rbar 100%\n")
print("after", file=sys.stderr)
"""


def test_benign_lines_are_kept_in_the_log_and_off_the_terminal(tmp_path):
    log = tmp_path / "logs" / "stderr.log"
    run = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True, check=True, timeout=60)
    terminal, kept = run.stderr.decode(), log.read_text()
    assert "Token authentication" not in terminal and "constructor arguments" not in terminal
    assert "a real warning\n" in terminal and "bar  10%\rbar  50%\rbar 100%\n" in terminal
    assert terminal.endswith("after\n")  # stderr is the terminal again after the block
    for line in ("Token authentication is enabled", "constructor arguments", "a real warning", "bar 100%"):
        assert line in kept
    assert "after" not in kept
