"""The skillrouter Serve application, for `serve run` and Serve config files (run from the repository root):

    serve run serve.app:app                                   # configs/minilm.yaml
    serve run serve.app:app config=configs/qwen3-0.6b.yaml overrides="serving.first_stage=dense"
    serve run serve/local.yaml                                # or: serve deploy serve/cluster.yaml
"""

from skillrouter.serving.app import app_builder

app = app_builder
