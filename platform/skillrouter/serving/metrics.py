"""Prometheus metrics of the serving stages, through Ray's metrics (`ray.serve.metrics`, which is `ray.util.metrics`
with the deployment, replica and application tags added).

Ray exports them, with Serve's own `ray_serve_*` metrics (request counts, latencies, queue lengths, replicas), at
each node's metrics endpoint (`ray start --metrics-export-port`, or the port `ray.init` picked), under the names
below prefixed by `ray_`. Stage latencies are recorded where the work happens: embed and search in the retriever
replicas, rerank in the reranker replicas, total in the ingress; refusals where they are made: admission control's
in the ingress (`skillrouter_rejected_total`) and, first in line under load, in Serve's proxy
(`skillrouter_proxy_rejected_total`, `serving.edge`).
"""

from __future__ import annotations

from functools import cache

# milliseconds: a cached BM25 lookup takes under 1, a cold cross-encoder batch on a CPU seconds
LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]

STAGE_LATENCY = "skillrouter_stage_latency_ms"
REQUESTS = "skillrouter_requests_total"
REJECTED = "skillrouter_rejected_total"
PROXY_REJECTED = "skillrouter_proxy_rejected_total"
BATCH_SIZE = "skillrouter_batch_size"
RELOADS = "skillrouter_index_reloads_total"
GENERATION = "skillrouter_index_generation"
METRIC_NAMES = (STAGE_LATENCY, REQUESTS, REJECTED, PROXY_REJECTED, BATCH_SIZE, RELOADS, GENERATION)


class ServingMetrics:
    """The metric objects of one replica. Created inside the replica, after Ray is up."""

    def __init__(self):
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.stage_latency = Histogram(STAGE_LATENCY, description="latency of one serving stage, ms",
                                       boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("stage", "first_stage"))
        self.requests = Counter(REQUESTS, description="HTTP requests answered, by endpoint and status",
                                tag_keys=("endpoint", "status"))
        self.rejected = Counter(REJECTED, description="requests refused by admission control (503), by reason",
                                tag_keys=("reason",))
        self.batch_size = Histogram(BATCH_SIZE, description="requests (retrieve) or pairs (rerank) per batch",
                                    boundaries=BATCH_BOUNDARIES, tag_keys=("stage",))
        self.reloads = Counter(RELOADS, description="index generations loaded by a replica, by outcome",
                               tag_keys=("component", "outcome"))
        self.generation = Gauge(GENERATION, description="the index generation a replica answers from",
                                tag_keys=("component",))

    def stage(self, stage: str, ms: float, first_stage: str = "") -> None:
        self.stage_latency.observe(ms, tags={"stage": stage, "first_stage": first_stage})


@cache
def replica_metrics() -> ServingMetrics:
    """One set per process: Ray refuses nothing, but two objects of one name would double the series."""
    return ServingMetrics()


@cache
def _proxy_rejected():
    from ray.util.metrics import Counter  # the proxy is an actor, not a replica: no deployment tags to add

    return Counter(PROXY_REJECTED, description="route requests refused in Serve's proxy (serving.edge), before any "
                   "replica: in_flight (503), body_timeout (408), body_too_large (413)", tag_keys=("reason",))


def count_proxy_refusal(reason: str) -> None:
    try:
        _proxy_rejected().inc(tags={"reason": reason})
    except Exception:  # a metric that cannot be recorded must not turn a 503 into the proxy's 500
        pass
