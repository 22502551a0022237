"""Ray Serve application: an HTTP ingress, a first-stage retriever (encoder + Milvus, BM25, or their fusion) and a
cross-encoder reranker, each a deployment that scales on its own.

- `schemas`: the HTTP API's request and response models (their limits are the API's limits);
- `stages`: the retrieval and reranking work itself, plain Python over the library (no Ray), so that tests and
  benchmarks call what the replicas run;
- `generations`: how replicas learn that the index or the corpus changed, and swap in the new one;
- `admin`: index changes through the API (upsert, delete, rebuild);
- `deployments`, `app`: the Serve deployments and the application builder; `metrics`: Prometheus metrics.
"""
