# The two commands of the README:  `make run` (the main job on the embedded default) and `make test`.
# Both create the project virtualenv in .venv on first use; it is rebuilt when pyproject.toml or
# constraints.txt change.
PYTHON ?= python3
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
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[test]'
	mkdir -p $(RAY_TMPDIR) $(TORCH_EXTENSIONS_DIR)
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python jobs/run_pipeline.py --config configs/minilm.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check platform tests benchmarks jobs serve
	$(VENV)/bin/python -m pytest tests

clean:
	rm -rf $(VENV) .cache runs
