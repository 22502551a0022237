# The two commands of the README:  `make run` (the main job on the embedded default) and `make test`.
# Both create the project virtualenv in .venv on first use; it is rebuilt when pyproject.toml or
# constraints.txt change.
#   make run ARGS="--rerun eval eval.top_k=20"       ARGS go to `skillrouter pipeline --config configs/minilm.yaml`
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu     the CPU build of torch on a machine whose pip
#                                                   would pull the CUDA build from PyPI (a GPU machine: leave it out)
PYTHON ?= python3
ARGS ?=
TORCH_INDEX ?=
VENV := .venv
STAMP := $(VENV)/.installed
export RAY_TMPDIR := $(CURDIR)/.cache/ray
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		-e '.[test]'
	mkdir -p $(RAY_TMPDIR) $(TORCH_EXTENSIONS_DIR)
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python jobs/run_pipeline.py --config configs/minilm.yaml $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check platform tests benchmarks jobs serve
	$(VENV)/bin/python -m pytest tests

clean:
	rm -rf $(VENV) .cache runs
