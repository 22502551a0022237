"""Connecting to Ray from the jobs: the cluster in RAY_ADDRESS when there is one, else a local one, quietly."""

from __future__ import annotations

import logging


def ensure_ray(quiet: bool = True) -> None:
    """Start or join Ray once. `quiet` keeps Ray Data's per-second progress logs out of a job's own output
    (they still go to the session's log files)."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)
    if quiet:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
