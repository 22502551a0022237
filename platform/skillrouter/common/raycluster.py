"""Connecting to Ray from the jobs: the cluster in RAY_ADDRESS when there is one, else a local one, quietly."""

from __future__ import annotations

import logging

# Lines Ray prints on the console about things that are fine in this project's jobs, each with why. They are
# dropped from console handlers only: Ray's session logs (RAY_TMPDIR/ray/session_latest/logs: ray-data.log,
# serve/, python-core-driver-*.log) keep every one of them.
BENIGN = {
    "Token authentication is enabled": "a local cluster on 127.0.0.1 protected by a token: nothing to do",
    "does not have any available CPUs": "Ray Data says so while Ray Train's workers hold the CPUs; its tasks "
                                        "start when training frees them",
    "will not be applied": "Serve was already started by this job with the same options",
    "graceful_shutdown": "Serve's controller is stopped with ray.kill when its graceful shutdown times out at the "
                         "end of the serve stage; the answers were already received",
    "Progress bars disabled": "this job turns Ray Data's bars on where the work is long",
}


class QuietConsole(logging.Filter):
    """Drops the `BENIGN` lines from a console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in BENIGN)


def quiet_console() -> None:
    """Put `QuietConsole` on every console handler of Ray's loggers (file handlers keep everything)."""
    names = [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]
    for logger in [logging.getLogger(n) for n in names]:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                    and not any(isinstance(f, QuietConsole) for f in handler.filters):
                handler.addFilter(QuietConsole())


def ensure_ray(quiet: bool = True) -> None:
    """Start or join Ray once. `quiet` keeps Ray Data's per-second progress logs out of a job's own output
    (they still go to the session's log files); the work that is long turns the progress bar on."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)
    if quiet:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    quiet_console()
