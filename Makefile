# facemask: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The team's shared mirror of the upstream weights, when it sits beside the checkout.
ifeq ($(origin FACEMASK_MODEL_MIRROR), undefined)
ifneq ($(wildcard ../shared/models/face_mask_detection.pb),)
export FACEMASK_MODEL_MIRROR := $(abspath ../shared/models)
endif
endif
PYTEST_ARGS ?=
PY_SOURCES := facemask services tests bench scripts


.PHONY: setup lock test unit lint fmt proto proto-check run validate-deploy images docs bench bench-model bench-inference bench-ingest bench-pipeline bench-memory bench-scale bench-chaos bench-train train clean help

help:
	@echo "make run     - run the whole pipeline locally (sets itself up)"
	@echo "make test    - set up, lint, and run the whole test suite"
	@echo "make lint    - ruff, mypy, import layers (lint-imports), proto and docs drift checks"
	@echo "make bench   - all benchmarks (tables on stdout, JSON under bench/results/)"
	@echo "make lock    - re-resolve requirements/*.txt from pyproject.toml (ARGS=--upgrade)"
	@echo "make images  - docker compose build (offline from ../shared when it holds the weights)"

setup:
	@bash scripts/setup.sh

# The lock files every install uses (setup, CI, the images): scripts/lock.py, with uv from
# the dev virtualenv (or PATH). Not behind `setup`, which refuses a stale lock.
lock:
	@if [[ -x $(PY) ]]; then $(PY) scripts/lock.py $(ARGS); else python3 scripts/lock.py $(ARGS); fi

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup proto-check
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy facemask services bench
	$(VENV)/bin/lint-imports
	$(PY) scripts/gen_docs.py --check
	$(PY) scripts/lock.py --check

fmt: setup
	$(VENV)/bin/ruff check --fix $(PY_SOURCES)
	$(VENV)/bin/ruff format $(PY_SOURCES)

validate-deploy: setup
	bash scripts/validate_deploy.sh

# The images, through docker compose (tags as in docker-compose.yml). With the team's mirror
# beside the checkout, its weights and sample images are copied instead of downloaded.
ifeq ($(origin FACEMASK_MODEL_MIRROR_CONTEXT), undefined)
ifneq ($(wildcard ../shared/models/face_mask_detection.pb),)
images: export FACEMASK_MODEL_MIRROR_CONTEXT := $(abspath ../shared)
endif
endif
images:
	docker compose build $(ARGS)

docs: setup
	$(PY) scripts/gen_docs.py

proto: setup
	$(PY) scripts/gen_proto.py

proto-check: setup
	$(PY) scripts/gen_proto.py --check

run: setup
	$(VENV)/bin/facemask run $(ARGS)

bench: bench-model bench-inference bench-ingest bench-pipeline bench-memory bench-scale

bench-model: setup
	$(PY) -m bench.bench_model $(ARGS)

bench-inference: setup
	$(PY) -m bench.bench_inference $(ARGS)

bench-ingest: setup
	$(PY) -m bench.bench_ingest $(ARGS)

bench-pipeline: setup
	$(PY) -m bench.bench_pipeline $(ARGS)

bench-memory: setup
	$(PY) -m bench.bench_memory $(ARGS)

# The default training recipe (README "Training your own model"): fine-tune the upstream
# model on ../shared/data/facemask-train, choose the best epoch on facemask-dev, distil from
# the upstream model on the sample video and images; the version lands in the model store.
# TRAIN_OUT is the run directory (checkpoints, run.json, export; never inside the repo).
SHARED_DATA ?= ../shared/data
TRAIN_OUT ?= $(HOME)/.cache/facemask/train/default
train: setup
	$(VENV)/bin/facemask train \
		--data $(SHARED_DATA)/facemask-train/annotations.json \
		--images $(SHARED_DATA)/facemask-train/images \
		--dev-data $(SHARED_DATA)/facemask-dev/annotations.json \
		--dev-images $(SHARED_DATA)/facemask-dev/images \
		--unlabelled $(SHARED_DATA)/video/group4_masks.mp4 \
		--unlabelled $(SHARED_DATA)/samples \
		--out $(TRAIN_OUT) $(ARGS)

# Not part of `make bench`: training takes tens of minutes (ARGS="--quick" for a short run).
bench-train: setup
	$(PY) -m bench.bench_train $(ARGS)

# Inference replicas pinned to one core each (1, then 2) draining a backlog; Redis's cost
# per frame; the capacity plan (README "Capacity plan"). A few minutes.
bench-scale: setup
	$(PY) -m bench.bench_scale $(ARGS)

# Not part of `make bench`: minutes of faults (ARGS="--minutes 10", "--quick").
bench-chaos: setup
	$(PY) -m bench.bench_chaos $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
