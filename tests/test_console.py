"""What the jobs show on the console: Ray's lines about things that are fine stay in its log files only."""

import io
import logging

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
