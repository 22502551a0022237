"""Connecting to Ray from the jobs: the cluster in RAY_ADDRESS when there is one, else a local one, quietly; and
whether a job's encoders go on GPUs (`choose_gpus`), from the cluster's GPUs and those its autoscaler can add."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

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


HEAD_NODE = "node:__internal_head__"  # the resource Ray gives the head node alone


class GpuChoice(NamedTuple):
    use_gpu: bool
    why: str


def choose_gpus(setting: bool | str = "auto") -> GpuChoice:
    """Whether a job's encoder actors take a GPU each (`mining.use_gpu`, `index.use_gpu`), and why. True and
    false are kept as given (true waits for GPU nodes to join); "auto" takes GPUs when the cluster has some now or
    its autoscaler has a node type with GPUs that it may add (`autoscaler_gpu_types`), else CPUs: a cluster
    scaled down to its head still embeds on GPUs."""
    import ray

    ensure_ray()
    have = ray.cluster_resources().get("GPU", 0)
    if setting is True:
        if have:
            return GpuChoice(True, f"use_gpu=true; the cluster has {have:g} GPUs")
        types = autoscaler_gpu_types()
        return GpuChoice(True, "use_gpu=true; no GPU yet: " + (
            f"waiting for the autoscaler to add {_names(types)}" if types else
            "waiting for a GPU node to join (no autoscaler node type with GPUs is visible from here)"))
    if setting is False:
        return GpuChoice(False, "use_gpu=false")
    if setting != "auto":
        raise ValueError(f"use_gpu must be auto, true or false, not {setting!r}")
    if have:
        return GpuChoice(True, f"the cluster has {have:g} GPUs")
    types = autoscaler_gpu_types()
    if types:
        return GpuChoice(True, f"the autoscaler can add {_names(types)}")
    return GpuChoice(False, "no GPU in the cluster, and no autoscaler node type with GPUs")


def _names(types: dict[str, float]) -> str:
    return ", ".join(f"{name} ({gpus:g} GPU{'' if gpus == 1 else 's'})" for name, gpus in sorted(types.items()))


def autoscaler_gpu_types() -> dict[str, float]:
    """The worker node types with GPUs that this cluster's autoscaler may add, {name: GPUs per node}; empty when
    it has none, or when no autoscaler configuration is visible.

    Ray 2.60 has no public call for this. Two sources, in order: the cluster config in the GCS (what Ray Data and
    Ray Train read through `ray._private.state`; only some autoscalers report it, not the open-source v1 or v2
    monitor of 2.60), then the autoscaler's own YAML, read on the head node where its monitor runs
    (`--autoscaling-config`: `ray up`'s ~/ray_bootstrap_config.yaml, or the file given to `ray start --head`).
    Not visible: an autoscaler in another container, such as KubeRay's sidecar; set use_gpu: true there."""
    import ray
    from ray._private.state import state

    reported = state.get_cluster_config()
    if reported is not None:
        return {group.name or f"group{i}": group.resources["GPU"]
                for i, group in enumerate(reported.node_group_configs)
                if group.resources.get("GPU", 0) > 0 and group.max_count != 0}
    port = int(ray.get_runtime_context().gcs_address.rpartition(":")[2])
    head = [n["NodeID"] for n in ray.nodes() if n["Alive"] and HEAD_NODE in n["Resources"]]
    if head == [ray.get_runtime_context().get_node_id()]:
        config = autoscaler_config_on_this_node(port)
    else:  # a driver or task on a worker node: ask the head
        probe = ray.remote(num_cpus=0, resources={HEAD_NODE: 0.001})(autoscaler_config_on_this_node)
        config = ray.get(probe.remote(port), timeout=60)
    return gpu_node_types(config) if config else {}


def autoscaler_config_on_this_node(gcs_port: int) -> dict | None:
    """The YAML of the autoscaler monitor on this machine that serves the GCS on `gcs_port` (Ray starts it as
    `monitor.py --gcs-address=HOST:PORT --autoscaling-config=PATH`), or None when no such monitor runs here."""
    import psutil
    import yaml

    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if not any(part.endswith("monitor.py") and "autoscaler" in part for part in cmdline):
            continue
        args = dict(part.split("=", 1) for part in cmdline if part.startswith("--") and "=" in part)
        if args.get("--gcs-address", "").rpartition(":")[2] != str(gcs_port) or not args.get("--autoscaling-config"):
            continue  # another cluster's monitor, or one without an autoscaler
        try:
            path = Path(proc.cwd()) / os.path.expanduser(args["--autoscaling-config"])
            return yaml.safe_load(path.read_text())
        except (OSError, psutil.Error):  # another user's process or file: as if not visible
            return None
    return None


def gpu_node_types(config: dict) -> dict[str, float]:
    """{name: GPUs per node} of the worker node types of an autoscaler config that have GPUs and may be added."""
    if config.get("max_workers", 1) == 0:
        return {}
    types = config.get("available_node_types") or {}
    return {name: float(t["resources"]["GPU"]) for name, t in types.items()
            if name != config.get("head_node_type") and (t.get("resources") or {}).get("GPU", 0) > 0
            and t.get("max_workers", 1) != 0}
