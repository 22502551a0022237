"""The Serve application: `build_app(config)` binds Ingress -> Retriever -> Reranker (+ IndexAdmin) from a profile;
`app_builder(args)` is the same for `serve run serve.app:app config=...` and Serve config files; `serve_and_route`
starts it on 127.0.0.1, routes some requests over HTTP and shuts it down (the main pipeline's demo).
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from skillrouter.config import DeploymentConfig, PipelineConfig, load_config
from skillrouter.serving.admin import prepare, reranker_model
from skillrouter.serving.edge import proxy_env
from skillrouter.serving.schemas import MAX_ROUTE_BODY_BYTES

APP_NAME = "skillrouter"
LOGGING = {"encoding": "JSON"}  # replica logs as JSON lines, each with its request id and our fields
DEFAULT_PROFILE = "configs/minilm.yaml"


def absolute_paths(config: PipelineConfig) -> PipelineConfig:
    """A copy with the run's paths made absolute: replicas may not start in this directory."""
    out = config.model_copy(deep=True)
    out.run_dir = str(Path(out.run_dir).resolve())
    out.mining.cache_dir = str(Path(out.mining.cache_dir).resolve())
    out.corpus.sources = [s if s == "bundled" else str(Path(s).resolve()) for s in out.corpus.sources]
    for section in (out.encoder, out.reranker):
        if section.output_dir:
            section.output_dir = str(Path(section.output_dir).resolve())
    for name in ("encoder", "reranker"):
        model = getattr(out.serving, name)
        if model and Path(model).expanduser().exists():
            setattr(out.serving, name, str(Path(model).expanduser().resolve()))
    return out


def deployment_options(d: DeploymentConfig, gpus: float = 0.0) -> dict:
    """`Deployment.options(...)` from a deployment section (a Serve config file may still override them)."""
    options = {"max_ongoing_requests": d.max_ongoing_requests, "max_queued_requests": d.max_queued_requests,
               "ray_actor_options": {"num_cpus": d.num_cpus, "num_gpus": d.num_gpus if d.num_gpus is not None
                                     else gpus}}
    if d.autoscaling is not None:
        options["autoscaling_config"] = d.autoscaling.model_dump()
    else:
        options["num_replicas"] = d.num_replicas
    return options


def with_secrets(options: dict, names: Sequence[str]) -> dict:
    """`options` whose replicas get the variables `names` (tokens) of this process' environment. A replica is a
    Ray worker, started by a raylet that never sees the environment of the process building the application (on a
    cluster, nor on a local Ray started before the variable was set), so a retriever would connect to a Milvus
    server without its token. Nothing changes when the job's runtime env already carries them (a Serve config
    file deployed by `skillrouter.cluster.runtime_env --deploy`); else the job's runtime env is kept, with the
    variables added (a deployment's own runtime env replaces the job's)."""
    import ray

    job = dict(ray.get_runtime_context().runtime_env or {}) if ray.is_initialized() else {}
    carried = dict(job.get("env_vars") or {})
    missing = {name: os.environ[name] for name in names if os.environ.get(name) and carried.get(name) !=
               os.environ[name]}
    if missing:
        options["ray_actor_options"]["runtime_env"] = {**job, "env_vars": {**carried, **missing}}
    return options


def _cluster_gpus() -> float:
    import ray

    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def build_app(config: PipelineConfig, log: Callable[[str], None] = print):
    """The application for `config`: prepares the run (corpus, index, first generation), then binds the
    deployments with the options of `config.serving`, or with what the run's main job selected on its validation
    queries (`serving.use_selection`)."""
    from skillrouter.evaluation.selection import read_selection, served_config
    from skillrouter.serving.deployments import IndexAdmin, Ingress, RerankerDeployment, Retriever

    config = absolute_paths(config)
    if config.serving.use_selection and (selection := read_selection(config.run_dir)) is not None:
        config = served_config(config, selection)
        log(f"serving: {selection['system']}, as the run's selection chose ({selection['why']})")
    prepare(config, log)
    cfg, gpus = config.serving, _cluster_gpus()
    model = reranker_model(config)
    if model is None and cfg.rerank:
        log("serving: no reranker (no trained export and serving.reranker unset): first stage only")
    milvus_token, admin_token = [config.index.token_env], [cfg.admin_token_env]  # what each replica reads
    retriever = Retriever.options(**with_secrets(deployment_options(cfg.retriever, gpus), milvus_token)).bind(config)
    reranker_options = deployment_options(cfg.reranker_deployment, gpus)
    if model is None:  # an idle placeholder (see RerankerDeployment): one replica that reserves nothing
        reranker_options.update(num_replicas=1, ray_actor_options={"num_cpus": 0, "num_gpus": 0})
        reranker_options.pop("autoscaling_config", None)
    reranker = RerankerDeployment.options(**reranker_options).bind(config, model)
    # one writer: the Lite file has one owner, and generations are numbered by it
    admin_options = {**deployment_options(cfg.admin.model_copy(update={"autoscaling": None})), "num_replicas": 1}
    admin = IndexAdmin.options(**with_secrets(admin_options, milvus_token)).bind(config)
    ingress = with_secrets(deployment_options(cfg.ingress), admin_token)
    # the in-flight limit must refuse before Serve queues: leave room for rejections and health checks
    ingress["max_ongoing_requests"] = max(ingress["max_ongoing_requests"], cfg.max_in_flight + 32)
    return Ingress.options(**ingress).bind(retriever, reranker, admin, config, model)


class AppArgs(BaseModel):
    """Arguments of `serve run serve.app:app config=... overrides='a=b c=d'` and of Serve config files."""

    model_config = ConfigDict(extra="forbid")

    config: str = DEFAULT_PROFILE
    overrides: list[str] | str = []


def app_builder(args: dict) -> object:
    """Serve's application builder: a profile (`config`) and `key=value` overrides."""
    parsed = AppArgs.model_validate(args or {})
    overrides = parsed.overrides.split() if isinstance(parsed.overrides, str) else parsed.overrides
    return build_app(load_config(parsed.config, overrides))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(config: PipelineConfig, log: Callable[[str], None] = print) -> str:
    """Start Serve on `serving.host:serving.port` (port 0: a free one) with the application; returns its URL."""
    from ray import serve

    from skillrouter.common.raycluster import ensure_ray

    ensure_ray()
    host, port = config.serving.host, config.serving.port or free_port(config.serving.host)
    cfg = config.serving
    replicas = cfg.ingress.autoscaling.max_replicas if cfg.ingress.autoscaling else cfg.ingress.num_replicas
    env = proxy_env(cfg.max_in_flight * replicas, cfg.body_timeout_s, cfg.retry_after_s, MAX_ROUTE_BODY_BYTES)
    # the controller gives a new proxy 5 s to report ready, then kills it, which fails serve.start: on a busy
    # 2-core machine (a test suite beside a main job) the proxy's process needs longer to import Serve
    env |= {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30"}
    serve.start(http_options={"host": host, "port": port},  # the proxies inherit the controller's environment
                controller_options={"runtime_env": {"env_vars": env}})
    serve.run(build_app(config, log), name=APP_NAME, route_prefix="/", logging_config=LOGGING)
    return f"http://{host}:{port}"


def stop() -> None:
    from ray import serve

    serve.delete(APP_NAME)
    serve.shutdown()


def post_json(url: str, body: dict, timeout_s: float = 60.0, headers: dict | None = None) -> tuple[int, dict]:
    """POST a JSON body; (status, decoded answer) for any status."""
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def serve_and_route(config: PipelineConfig, queries: Sequence[str], top_k: int = 5, port: int = 0,
                    log: Callable[[str], None] = print) -> list[dict]:
    """Start the application on 127.0.0.1:`port` (0: a free port), route `queries` over HTTP, shut Serve down;
    returns the answers (`RouteResponse` as dicts, with the client's `client_ms`)."""
    config = config.model_copy(deep=True)
    config.serving.host, config.serving.port = "127.0.0.1", port
    url = start(config, log)
    try:
        answers = []
        for query in queries:
            started = time.perf_counter()
            status, answer = post_json(f"{url}/v1/route", {"query": query, "top_k": top_k})
            if status != 200:
                raise RuntimeError(f"POST /v1/route answered {status}: {answer.get('detail')}")
            answer["client_ms"] = round((time.perf_counter() - started) * 1000, 1)
            answers.append(answer)
        return answers
    finally:
        stop()
