"""What a job or a Serve application takes from this machine to a Ray cluster: the secrets of this shell's
environment, as runtime_env env_vars, so that no file of the repository or of the cluster holds them.

    ray job submit --working-dir . --runtime-env-json "$(python -m skillrouter.cluster.runtime_env --config PROFILE)" \
        -- python jobs/generate_queries.py --config PROFILE
    python -m skillrouter.cluster.runtime_env --deploy serve/cluster.yaml      # `serve deploy`, with the secrets added

A job gets its profile's LLM key and endpoint (`querygen.api_key_env`, OPENAI_BASE_URL) and Milvus token
(`index.token_env`); a Serve application the admin token (`serving.admin_token_env`) and Milvus token of the
profile in its `args`. Variables unset here are left out. Whoever holds the cluster's Ray token can read them in
the job's or the application's details, and can run code on the cluster anyway.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from skillrouter.config import PipelineConfig, load_config


def job_secret_names(config: PipelineConfig) -> list[str]:
    return [config.querygen.api_key_env, "OPENAI_BASE_URL", config.index.token_env]


def serve_secret_names(config: PipelineConfig) -> list[str]:
    return [config.serving.admin_token_env, config.index.token_env]


def _present(names: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    return {name: environ[name] for name in names if environ.get(name)}


def job_runtime_env(config: PipelineConfig, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The `--runtime-env-json` of `ray job submit --working-dir .`: the job's secrets, and `platform/` of the
    submitted copy first on the path, so the job runs the code it was submitted with, not the nodes' install."""
    return {"env_vars": {"PYTHONPATH": "platform", **_present(job_secret_names(config), environ)}}


def serve_config_with_secrets(path: str | Path, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The Serve config file at `path`, each application's secrets added to its runtime_env env_vars."""
    from skillrouter.serving.app import AppArgs

    config = yaml.safe_load(Path(path).read_text())
    for app in config.get("applications", []):
        args = AppArgs.model_validate(app.get("args") or {})
        overrides = args.overrides.split() if isinstance(args.overrides, str) else args.overrides
        names = serve_secret_names(load_config(args.config, overrides))
        app.setdefault("runtime_env", {}).setdefault("env_vars", {}).update(_present(names, environ))
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skillrouter.cluster.runtime_env",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="the job's profile, for the names of its secrets (default: the defaults)")
    parser.add_argument("--deploy", metavar="SERVE_CONFIG", help="deploy this Serve config file, secrets added")
    parser.add_argument("--address", default=os.environ.get("RAY_DASHBOARD_ADDRESS", "http://localhost:8265"),
                        help="the dashboard, for --deploy (default as `serve deploy`: $RAY_DASHBOARD_ADDRESS or "
                             "http://localhost:8265)")
    args = parser.parse_args(argv)
    if not args.deploy:
        print(json.dumps(job_runtime_env(load_config(args.config))))
        return 0
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
    from ray.serve.schema import ServeDeploySchema

    config = serve_config_with_secrets(args.deploy)
    schema = ServeDeploySchema.model_validate(config)
    ServeSubmissionClient(args.address).deploy_applications(schema.model_dump(exclude_unset=True))
    added = sorted({k for app in config["applications"] for k in app["runtime_env"]["env_vars"]})
    print(f"sent {args.deploy} to {args.address} with {', '.join(added) or 'no secrets'}; `serve status` follows it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
