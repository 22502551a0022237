"""The cluster: cluster.yaml checked offline with Ray's own validation, the autoscaler adding and removing nodes
of its types on Ray's fake multi-node provider, and a job sent with `ray job submit` to a `ray start` head.

The slow tests start their own Ray heads (token auth on, every address 127.0.0.1, their own ports and temp dir)
and stop them by process id: `ray stop` would stop every Ray process of the machine, other people's included.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import ray
import yaml

from skillrouter.cluster.runtime_env import job_runtime_env, serve_config_with_secrets
from skillrouter.cluster.runtime_env import main as runtime_env_main
from skillrouter.config import load_config
from skillrouter.serving.app import free_port

REPO = Path(__file__).resolve().parents[1]
RAY_CLI = str(Path(sys.executable).parent / "ray")
WORLD = {"0.0.0.0/0", "::/0"}
RAY_PORTS = {6379: "GCS", 8265: "dashboard and job API", 10001: "Ray Client"}
SECRET_VARS = ("OPENAI_API_KEY", "MILVUS_TOKEN", "SKILLROUTER_ADMIN_TOKEN")


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def cluster() -> dict:
    return read_yaml(REPO / "cluster.yaml")


# -- cluster.yaml, offline ----------------------------------------------------------------------------------------


def test_cluster_yaml_passes_rays_validation(cluster):
    """What `ray up` does before it calls AWS: merge the provider's defaults, then validate against Ray's schema."""
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    # the defaults merged in (aws/defaults.yaml) must not replace what the file sets
    assert prepared["head_start_ray_commands"] == cluster["head_start_ray_commands"]
    assert prepared["provider"]["security_group"] == cluster["provider"]["security_group"]
    assert set(prepared["available_node_types"]) == set(cluster["available_node_types"])
    assert prepared["head_setup_commands"] == cluster["setup_commands"] + cluster["head_setup_commands"]
    # and the validation is real: a misspelt key of a node type fails it
    broken = copy.deepcopy(prepared)
    broken["available_node_types"]["ray.worker.gpu1"]["max_worker"] = 2
    with pytest.raises(ValidationError, match="max_worker"):
        validate_config(broken)


def test_head_runs_no_tasks_and_every_start_keeps_token_auth(cluster):
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}
    head_start, worker_start = cluster["head_start_ray_commands"][-1], cluster["worker_start_ray_commands"][-1]
    assert "RAY_AUTH_MODE=token ray start --head" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert "RAY_AUTH_MODE=token ray start --address" in worker_start
    commands = [c for key in cluster if key.endswith("_commands") for c in cluster[key]]
    assert not any("0.0.0.0" in c or "RAY_AUTH_MODE=disabled" in c for c in commands)
    assert "export RAY_AUTH_MODE=token" in cluster["setup_commands"][0]  # `ray exec`, `ray status` on the nodes
    # the token comes from the laptop's home, not from the repository
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_gpu_worker_types_host_the_profiles_training_workers(cluster):
    types = cluster["available_node_types"]
    for profile, node_type in (("qwen3-0.6b.yaml", "ray.worker.gpu1"), ("qwen3-8b.yaml", "ray.worker.gpu8")):
        config = load_config(REPO / "configs" / profile)
        have = types[node_type]["resources"]
        for kind in ("encoder", "reranker"):
            t = config.train(kind)
            assert t.use_gpu, (profile, kind)
            # Ray Train's workers of one run on one node: NVLink for ZeRO's collectives
            assert have["GPU"] >= t.num_workers and have["CPU"] >= t.num_workers * t.cpus_per_worker, (profile, kind)
        assert types[node_type]["max_workers"] >= 1
    one_gpu = load_config(REPO / "configs" / "qwen3-0.6b.yaml").encoder
    assert types["ray.worker.gpu1"]["resources"]["GPU"] == one_gpu.num_workers  # no GPU idles beside a 0.6B run
    assert load_config(REPO / "configs" / "qwen3-8b.yaml").encoder.num_workers == 4
    cpu = types["ray.worker.cpu"]["resources"]
    assert "GPU" not in cpu and cpu["CPU"] > 0  # CPU work does not start GPU nodes
    assert sum(t.get("min_workers", 0) for t in types.values()) == 0  # an idle cluster is its head alone
    assert cluster["max_workers"] >= sum(t.get("max_workers", 0) for t in types.values())


def test_serve_cluster_config_fits_the_cluster(cluster):
    serve = read_yaml(REPO / "serve" / "cluster.yaml")
    types = cluster["available_node_types"]
    workers = [t for name, t in types.items() if name != cluster["head_node_type"]]
    (app,) = serve["applications"]
    gpu_replicas = 0
    for d in app["deployments"]:
        need = d["ray_actor_options"]
        fits = [t for t in workers if t["resources"].get("CPU", 0) >= need.get("num_cpus", 1)
                and t["resources"].get("GPU", 0) >= need.get("num_gpus", 0)]
        assert fits, d["name"]
        if need.get("num_gpus"):
            gpu_replicas += d.get("num_replicas") or d["autoscaling_config"]["max_replicas"]
    one_gpu_nodes = types["ray.worker.gpu1"]
    assert gpu_replicas <= one_gpu_nodes["max_workers"] * one_gpu_nodes["resources"]["GPU"]  # the peak fits
    # the code: the repository cluster.yaml syncs to every node (~ is /home/ray in Ray's images)
    assert app["runtime_env"]["working_dir"] == "local:///home/ray/skillrouter"
    assert cluster["file_mounts"]["~/skillrouter"] == "."
    # the run directory and embedding cache: on the shared mount every container sees
    shared = "/mnt/shared"
    assert f"--volume {shared}:{shared}" in cluster["docker"]["run_options"]
    overrides = dict(o.split("=", 1) for o in app["args"]["overrides"].split())
    assert overrides["run_dir"].startswith(shared + "/") and overrides["mining.cache_dir"].startswith(shared + "/")


def _opens_to_world(rule: dict, port: int) -> bool:
    cidrs = {r.get("CidrIp") for r in rule.get("IpRanges", [])} | {r.get("CidrIpv6") for r in
                                                                     rule.get("Ipv6Ranges", [])}
    if not cidrs & WORLD:
        return False
    if str(rule.get("IpProtocol")) == "-1":
        return True
    return rule.get("FromPort", -1) <= port <= rule.get("ToPort", -1)


def test_no_ingress_rule_opens_rays_ports_to_the_internet(cluster):
    rules = cluster["provider"]["security_group"]["IpPermissions"]
    for port, what in RAY_PORTS.items():
        assert not any(_opens_to_world(rule, port) for rule in rules), f"{port} ({what}) open to the internet"
    assert _opens_to_world({"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 9000,
                            "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, 8265)  # the check itself catches a range
    # no node type brings its own groups or interfaces, which would bypass the group above
    for node_type in cluster["available_node_types"].values():
        assert not {"SecurityGroupIds", "NetworkInterfaces"} & set(node_type["node_config"])


_SECRET_PATTERNS = [
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),                          # OpenAI-style API keys
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),                             # AWS access key ids
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b[0-9a-f]{32,}\b"),                                # hex tokens (Ray's auth token is one)
    re.compile(r"\b(?:" + "|".join(SECRET_VARS) + r")\s*[:=]\s*['\"]?(?!\$)[^\s'\"$]{6,}"),  # NAME=a literal
    re.compile(r"(?i)\b(?:aws_secret_access_key|password|admin_token)\s*[:=]\s*['\"]?[^\s'\"$]{6,}"),
]


def secret_literals(text: str) -> list[str]:
    return [m.group(0) for pattern in _SECRET_PATTERNS for m in pattern.finditer(text)]


def test_no_secret_looking_literal_in_the_cluster_files():
    assert secret_literals("OPENAI_API_KEY=sk-proj-abcdefghijklmnop1234") and secret_literals(
        "MILVUS_TOKEN: root:Milvus") and secret_literals("token " + secrets.token_hex(16))
    assert not secret_literals("read from $MILVUS_TOKEN; OPENAI_API_KEY=$OPENAI_API_KEY")
    files = [REPO / "cluster.yaml", REPO / "serve" / "cluster.yaml", REPO / ".rayignore",
             *sorted((REPO / "configs" / "cluster").iterdir())]
    for path in files:
        assert secret_literals(path.read_text()) == [], path


def test_nodes_install_the_pinned_project_of_the_laptops_ray(cluster):
    pins = (REPO / "configs" / "cluster" / "constraints.txt").read_text().splitlines()
    assert f"ray=={ray.__version__}" in pins and "-c ../../constraints.txt" in pins
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    images = [cluster["docker"]["image"], cluster["docker"]["head_image"],
              *(t.get("docker", {}).get("worker_image") for t in cluster["available_node_types"].values())]
    for image in filter(None, images):
        assert image.startswith(f"rayproject/ray:{ray.__version__}-{py}-"), image
    install = "-c ~/skillrouter/configs/cluster/constraints.txt -e ~/skillrouter"
    cpu_index = "--extra-index-url https://download.pytorch.org/whl/cpu"
    gpu = cluster["setup_commands"] + cluster["worker_setup_commands"]
    head = cluster["setup_commands"] + cluster["head_setup_commands"]
    cpu = cluster["available_node_types"]["ray.worker.cpu"]["worker_setup_commands"]
    assert any(install in c and cpu_index not in c for c in gpu)  # PyPI's torch: the CUDA build
    for commands in (head, cpu):
        assert any(install in c and cpu_index in c for c in commands)  # the CPU build of the same version
        assert commands[0] == cluster["setup_commands"][0]
    assert any("boto3" in c for c in head)  # the autoscaler on the head launches EC2 instances with it


def test_fake_cluster_mirrors_the_node_types_at_toy_scale(cluster):
    from ray.autoscaler._private.util import validate_config

    fake = read_yaml(REPO / "configs" / "cluster" / "fake_multi_node.yaml")
    validate_config(fake)  # Ray's monitor takes it as it is: it must be complete
    real, toy = cluster["available_node_types"], fake["available_node_types"]
    assert set(toy) == set(real) and fake["head_node_type"] == cluster["head_node_type"]
    for name, node_type in real.items():
        assert toy[name]["resources"].get("GPU", 0) == node_type["resources"].get("GPU", 0), name
        assert toy[name]["resources"]["CPU"] <= node_type["resources"]["CPU"], name
    assert fake["idle_timeout_minutes"] < cluster["idle_timeout_minutes"]


# -- secrets travel with the job, from this shell's environment ------------------------------------------------------


def test_job_runtime_env_carries_the_profiles_secrets_that_are_set(monkeypatch, capsys):
    config = load_config(REPO / "configs" / "qwen3-0.6b.yaml", ["querygen.api_key_env=MY_LLM_KEY"])
    env = job_runtime_env(config, {"MY_LLM_KEY": "k1", "MILVUS_TOKEN": "k2", "OPENAI_API_KEY": "other",
                                   "SKILLROUTER_ADMIN_TOKEN": "k3", "OPENAI_BASE_URL": ""})
    assert env == {"env_vars": {"PYTHONPATH": "platform", "MY_LLM_KEY": "k1", "MILVUS_TOKEN": "k2"}}
    # `python -m skillrouter.cluster.runtime_env --config PROFILE`, as the README's `ray job submit` uses it
    for name in (*SECRET_VARS, "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "k4")
    assert runtime_env_main(["--config", str(REPO / "configs" / "qwen3-0.6b.yaml")]) == 0
    assert json.loads(capsys.readouterr().out) == {"env_vars": {"PYTHONPATH": "platform", "OPENAI_API_KEY": "k4"}}


def test_serve_config_gets_the_admin_and_milvus_tokens_and_stays_valid(monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    monkeypatch.chdir(REPO)  # the profile in the config's args is relative to the repository
    config = serve_config_with_secrets("serve/cluster.yaml", {"SKILLROUTER_ADMIN_TOKEN": "a", "MILVUS_TOKEN": "m",
                                                              "OPENAI_API_KEY": "o"})
    (app,) = ServeDeploySchema.model_validate(config).applications
    assert app.runtime_env["env_vars"] == {"SKILLROUTER_ADMIN_TOKEN": "a", "MILVUS_TOKEN": "m"}
    assert app.runtime_env["working_dir"] == "local:///home/ray/skillrouter"
    assert "env_vars" not in read_yaml(REPO / "serve" / "cluster.yaml")["applications"][0]["runtime_env"]


# -- local Ray heads for the slow tests ------------------------------------------------------------------------------


def _ray_temp_root() -> Path:
    # Ray's unix sockets live under its temp dir and a socket path may not exceed 107 bytes: the project's
    # ignored .cache when its path is short enough, else /tmp.
    cache = REPO / ".cache"
    root = cache if len(str(cache)) <= 40 else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="r", dir=root))


def _stop_tree(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """Stop `ray start --block` (which stops its node on SIGTERM) and anything it started that outlives it: the
    fake provider's nodes would wait a minute for the GCS that is gone, so they are stopped too, by pid."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout_s)
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(tree, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


@dataclasses.dataclass
class Head:
    address: str      # the GCS, for drivers
    dashboard: str    # the job API
    env: dict         # for clients: the cluster's token, and no secret of this shell
    temp: Path        # Ray's temp dir: sessions, logs, unpacked working dirs
    pid: int          # `ray start --block`, parent of the node's processes

    def listening(self) -> set[str]:
        """The addresses the node's processes listen on."""
        procs = [psutil.Process(self.pid), *psutil.Process(self.pid).children(recursive=True)]
        out = set()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                out |= {c.laddr.ip for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        return out


@contextlib.contextmanager
def local_head(num_cpus: int, *, dashboard: bool, port: int | None = None, autoscaling_config: Path | None = None,
               extra_env: dict | None = None):
    """A `ray start --head --block` on 127.0.0.1 with token auth, its own ports and temp dir, stopped by pid."""
    temp = _ray_temp_root()
    env = {k: v for k, v in os.environ.items() if k not in (*SECRET_VARS, "RAY_ADDRESS", "PYTHONPATH")}
    env["PATH"] = f"{Path(RAY_CLI).parent}{os.pathsep}{env.get('PATH', '')}"  # a job's `python` is this one
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0",
               # nodes started without --node-ip-address (the fake ones) then take 127.0.0.1 too, not a LAN IP
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # stop at once: no Serve proxy here to drain for 30 s
               **(extra_env or {}))
    port, dash_port = port or free_port(), free_port()
    cmd = [RAY_CLI, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           f"--num-cpus={num_cpus}", "--num-gpus=0", "--object-store-memory=100000000", f"--temp-dir={temp}",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--include-dashboard={str(dashboard).lower()}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash_port}"]
    if autoscaling_config:
        cmd.append(f"--autoscaling-config={autoscaling_config}")
    log = (temp / "ray-start.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (temp / "ray-start.log").read_text():
            assert proc.poll() is None, (temp / "ray-start.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "ray start did not finish within 90 s"
            time.sleep(0.5)
        yield Head(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash_port}", env, temp, proc.pid)
    finally:
        _stop_tree(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _log_tail(temp: Path, name: str, chars: int = 3000) -> str:
    logs = sorted(temp.glob(f"session_*/logs/{name}"))
    return logs[-1].read_text(errors="replace")[-chars:] if logs else f"(no {name})"


# -- the autoscaler on the fake multi-node provider ------------------------------------------------------------------

# The driver: demand beyond the head (which has no CPUs) as the 8B training makes it (a placement group of 4 GPU
# workers on one node) and as Ray Data's actor pools make it (a CPU actor); both hold their nodes until the
# count is taken. Then nothing, and the nodes must go.
_DEMAND = textwrap.dedent("""
    import json, os, sys, time
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(address=sys.argv[1], log_to_driver=False)

    def alive():
        return [n for n in ray.nodes() if n["Alive"]]

    def where():
        return {"type": os.environ.get("RAY_NODE_TYPE_NAME"), "node": ray.get_runtime_context().get_node_id(),
                "gpus": [str(g) for g in ray.get_gpu_ids()]}

    @ray.remote(num_cpus=1)
    class CpuWorker:
        def where(self):
            return where()

    out = {"nodes_before": len(alive())}
    started = time.monotonic()
    pg = placement_group([{"CPU": 1, "GPU": 1}] * 4, strategy="STRICT_PACK")
    actor = CpuWorker.remote()
    out["pg_ready"] = pg.wait(timeout_seconds=120)
    if out["pg_ready"]:
        task = ray.remote(num_cpus=1, num_gpus=1)(where)
        out["gpu_tasks"] = ray.get([task.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote()
                                    for i in range(4)], timeout=120)
    out["cpu_actor"] = ray.get(actor.where.remote(), timeout=120)
    out["nodes_peak"] = sorted([n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0)] for n in alive())
    out["addresses"] = sorted({n["NodeManagerAddress"] for n in alive()})
    out["scale_up_s"] = round(time.monotonic() - started, 1)
    ray.kill(actor)
    remove_placement_group(pg)
    released = time.monotonic()
    while len(alive()) > 1 and time.monotonic() - released < 90:
        time.sleep(1)
    out["nodes_after"] = len(alive())
    out["scale_down_s"] = round(time.monotonic() - released, 1)
    print("RESULT " + json.dumps(out), flush=True)
""")


def _drive_fake_cluster(tmp_path: Path, driver: str, **settings) -> dict:
    """Run `driver` (argv: the head's address, the autoscaler's config file) against a head whose autoscaler
    adds the node types of fake_multi_node.yaml (`settings` replace its top-level keys); what it prints after
    RESULT."""
    config = {**read_yaml(REPO / "configs" / "cluster" / "fake_multi_node.yaml"), **settings}
    port = free_port()
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"  # the fake nodes join the head's GCS
    path = tmp_path / "fake_multi_node.yaml"
    path.write_text(yaml.safe_dump(config))
    fake = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}  # as ray.cluster_utils sets them
    with local_head(0, dashboard=False, port=port, autoscaling_config=path, extra_env=fake) as head:
        run = subprocess.run([sys.executable, "-c", driver, head.address, str(path)], env=head.env,
                             capture_output=True, text=True, timeout=300)
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        assert run.returncode == 0 and lines, run.stderr[-3000:] + "\n" + _log_tail(head.temp, "monitor.log")
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_autoscaler_adds_the_right_node_types_and_removes_them_when_idle(tmp_path):
    out = _drive_fake_cluster(tmp_path, _DEMAND)
    assert out["nodes_before"] == 1 and out["pg_ready"], out
    # the 4 GPU workers of a run share one node of the 8-GPU type, each with a GPU of its own
    assert {t["type"] for t in out["gpu_tasks"]} == {"ray.worker.gpu8"}, out
    assert len({t["node"] for t in out["gpu_tasks"]}) == 1
    assert len({g for t in out["gpu_tasks"] for g in t["gpus"]}) == 4
    # CPU work went to a CPU worker: not to the head (no CPUs), not to a GPU node
    assert out["cpu_actor"]["type"] == "ray.worker.cpu" and out["cpu_actor"]["gpus"] == []
    assert out["nodes_peak"] == [[0, 0], [2, 0], [4, 8]], out  # head, cpu, gpu8: no other node started
    assert out["addresses"] == ["127.0.0.1"], out
    # idle nodes go after idle_timeout_minutes (6 s here)
    assert out["nodes_after"] == 1, out


# -- GPUs or CPUs for the encoder actors of mining and index builds ---------------------------------------------------


def test_gpu_node_types_are_the_workers_with_gpus_the_autoscaler_may_add(cluster):
    from skillrouter.common.raycluster import gpu_node_types

    assert gpu_node_types(cluster) == {"ray.worker.gpu1": 1.0, "ray.worker.gpu8": 8.0}
    types = copy.deepcopy(cluster)
    types["available_node_types"]["ray.worker.gpu8"]["max_workers"] = 0  # a type it may not add
    types["available_node_types"][types["head_node_type"]]["resources"]["GPU"] = 1  # the head is never added
    assert gpu_node_types(types) == {"ray.worker.gpu1": 1.0}
    assert gpu_node_types({**cluster, "max_workers": 0}) == {}  # no worker at all
    cpu_only = {**cluster, "available_node_types": {k: v for k, v in cluster["available_node_types"].items()
                                                    if "GPU" not in v["resources"]}}
    assert gpu_node_types(cpu_only) == {}


@pytest.mark.slow
def test_without_gpus_or_an_autoscaler_encoders_stay_on_cpus(ray_cluster):
    """The local cluster of `make run`: its head's monitor has no autoscaling config (other Ray clusters on this
    machine, with their monitors, are not this one's)."""
    from skillrouter.common.raycluster import choose_gpus

    assert choose_gpus("auto") == (False, "no GPU in the cluster, and no autoscaler node type with GPUs")
    assert choose_gpus(False).use_gpu is False
    forced = choose_gpus(True)
    assert forced.use_gpu and "waiting for a GPU node to join" in forced.why
    with pytest.raises(ValueError, match="auto, true or false"):
        choose_gpus("yes")


# A cluster scaled down to its head, which has no GPU: `auto` must count the GPU node types the autoscaler can add,
# and the Ray Data pool of mining and index builds must then wait for a GPU node and run there (Ray Data's own
# resource requests may bring up a CPU node for a while too). The autoscaler reads its file again at every update,
# so the driver also takes the GPU types out of it (auto: CPUs) and puts them back.
_GPU_CHOICE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import ray, yaml
    from skillrouter.common.raycluster import autoscaler_gpu_types, choose_gpus
    from skillrouter.corpus.ingest import read_skills
    from skillrouter.models.encoder import EncoderSpec
    from skillrouter.retrieval.embeddings import embed_pool

    ray.init(address=sys.argv[1], log_to_driver=False)

    def write(path, text):
        path.with_suffix(".tmp").write_text(text)
        path.with_suffix(".tmp").replace(path)  # the autoscaler never reads half a file

    path = Path(sys.argv[2])
    with_gpus = path.read_text()
    config = yaml.safe_load(with_gpus)
    config["available_node_types"] = {name: t for name, t in config["available_node_types"].items()
                                      if "GPU" not in t["resources"]}
    out = {"nodes_before": len(ray.nodes())}
    write(path, yaml.safe_dump(config))
    out["cpu_types_only"] = choose_gpus("auto")
    write(path, with_gpus)
    out.update(auto=choose_gpus("auto"), true=choose_gpus(True), false=choose_gpus(False))
    rows = embed_pool(read_skills("bundled")[:8], EncoderSpec("minilm", 64), actors=1, batch_size=4, progress=False)
    out["rows"] = list(rows.shape)
    gpus = {n["NodeID"]: n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]}
    out["encoder_gpus"] = [gpus.get(a["Address"]["NodeID"]) for a in ray._private.state.actors().values()
                           if "EmbedWorker" in a["ActorClassName"]]
    # a driver or task on a worker node reads the autoscaler's config through a task on the head
    out["from_a_worker"] = ray.get(ray.remote(num_gpus=1)(autoscaler_gpu_types).remote(), timeout=120)
    print("RESULT " + json.dumps(out), flush=True)
""")


@pytest.mark.slow
def test_auto_embeds_on_gpu_nodes_the_autoscaler_can_add(tmp_path):
    out = _drive_fake_cluster(tmp_path, _GPU_CHOICE, idle_timeout_minutes=1)  # the GPU node outlives the pool
    assert out["nodes_before"] == 1, out
    assert out["cpu_types_only"] == [False, "no GPU in the cluster, and no autoscaler node type with GPUs"], out
    assert out["auto"] == [True, "the autoscaler can add ray.worker.gpu1 (1 GPU), ray.worker.gpu8 (8 GPUs)"], out
    assert out["true"][0] and "waiting for the autoscaler to add ray.worker.gpu1" in out["true"][1], out
    assert out["false"] == [False, "use_gpu=false"], out
    assert out["rows"] == [8, 384]
    assert out["encoder_gpus"] == [1], out  # the pool's one actor ran on a node of the one-GPU type
    assert out["from_a_worker"] == {"ray.worker.gpu1": 1.0, "ray.worker.gpu8": 8.0}


# -- a job through `ray job submit` -------------------------------------------------------------------------------

# Ignored folders of a working copy that must not travel with `--working-dir .` (.gitignore and .rayignore).
_HEAVY = (".venv", ".cache", "runs", ".whl", ".gpu", ".git")


def _working_copy(root: Path) -> Path:
    """The repository as a user's checkout has it: the code and the ignore files, plus a file in each heavy
    folder that the upload must leave behind."""
    for name in ("jobs", "configs", "platform"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in (".gitignore", ".rayignore"):
        shutil.copy(REPO / name, root / name)
    for name in _HEAVY:
        (root / name).mkdir()
        (root / name / "probe.bin").write_bytes(b"\0" * 1024)
    return root


@pytest.mark.slow
def test_ray_job_submit_runs_a_job_with_the_secrets_it_carries(tmp_path):
    """generate_queries.py on the LLM path, against the scripted OpenAI server: the key reaches the Ray Data
    actors through the job's runtime_env alone (the cluster was started without it), and nowhere else."""
    from skillrouter.testing.openai_server import OpenAIStub

    work = _working_copy(tmp_path / "checkout")
    out, key, job_id = tmp_path / "queries", "sk-" + secrets.token_urlsafe(24), f"test-{secrets.token_hex(4)}"
    stub = OpenAIStub(capacity=8)
    auth_headers = []

    @stub.app.middleware("http")
    async def record_key(request, call_next):
        auth_headers.append(request.headers.get("authorization"))
        return await call_next(request)

    with stub, local_head(2, dashboard=True) as head:
        runtime_env = job_runtime_env(load_config(REPO / "configs" / "minilm.yaml"), {"OPENAI_API_KEY": key})
        job = ["--config", "configs/minilm.yaml", "--out", str(out), f"run_dir={tmp_path / 'run'}",
               "querygen.generator=llm", f"querygen.base_url={stub.base_url}", "querygen.num_skills=6",
               "querygen.actors=1"]
        submit = subprocess.run(
            [RAY_CLI, "job", "submit", "--address", head.dashboard, "--submission-id", job_id, "--working-dir", ".",
             "--runtime-env-json", json.dumps(runtime_env), "--", "python", "jobs/generate_queries.py", *job],
            cwd=work, env=head.env, capture_output=True, text=True, timeout=300)
        assert submit.returncode == 0 and f"Job '{job_id}' succeeded" in submit.stdout, (
            submit.stdout[-3000:] + submit.stderr[-3000:] + _log_tail(head.temp, f"job-driver-{job_id}.log"))
        # the job API answers only with the cluster's token
        unauthenticated = subprocess.run([RAY_CLI, "job", "list", "--address", head.dashboard], text=True,
                                         capture_output=True, timeout=60,
                                         env={**head.env, "RAY_AUTH_TOKEN": "not-the-token"})
        packages = [p for p in head.temp.glob("session_latest/runtime_resources/working_dir_files/*") if p.is_dir()]
        uploaded = {p.name for p in packages[0].iterdir()} if len(packages) == 1 else set()
        listening = head.listening()
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening  # the dashboard included
    assert unauthenticated.returncode != 0 and job_id not in unauthenticated.stdout
    assert "skills: 6 ok, 0 failed, 0 unfinished of 6; 18 queries (llm" in submit.stdout
    rows = pq.read_table(out / "queries.parquet").to_pylist()
    assert len(rows) == 18 and json.loads((out / "summary.json").read_text())["usage"]["requests"] == 6
    assert len(auth_headers) == 6 and set(auth_headers) == {f"Bearer {key}"}
    assert key not in submit.stdout + submit.stderr
    # the upload: the code, without the ignored folders
    assert {"jobs", "configs", "platform"} <= uploaded and not uploaded & set(_HEAVY), uploaded
