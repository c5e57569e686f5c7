# mmdet_custom: `make demo` and `make test` work from a fresh clone; everything else builds on `make install`.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
DATA ?=
DEMO_DIR ?= work_dirs/demo
# empty: scripts/demo.sh picks the smoke config, or with DATA the real-data one
DEMO_CONFIG ?=
PYTEST_ARGS ?=
# pytest-xdist processes for `make test` (test files stay whole on one process: module fixtures run once);
# TEST_WORKERS=0 runs the suite in this process
TEST_WORKERS ?= 2
BENCH_ARGS ?= --img-size 800 --repeats 3
DENSE_ARGS ?=

.PHONY: install demo test lint bench bench-anchors bench-models bench-eval bench-dense bench-scene bench-region gpu-check clean

install:
	VENV=$(VENV) bash scripts/install.sh

# Train then test the baseline. Default data: the generated smoke dataset (see README); DATA=<raw iSAID dir>
# converts real iSAID with the devkit windowing and runs the same job on it.
demo: install
	VENV=$(VENV) DATA="$(DATA)" DEMO_DIR="$(DEMO_DIR)" DEMO_CONFIG="$(DEMO_CONFIG)" bash scripts/demo.sh

# lint first (seconds), then the suite on TEST_WORKERS processes
test: lint
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# ruff (lint + import sorting, line length 120; settings in pyproject.toml)
lint: install
	$(VENV)/bin/ruff check .

# then the tables of work_dirs/bench/*.md go into docs/benchmarks.md with the machine and date (never edited by hand)
bench: install bench-anchors bench-models bench-eval bench-dense
	$(PY) tools/benchmarks/update_docs.py --bench-dir work_dirs/bench --doc docs/benchmarks.md

# dense patches (100 to 3,000 objects): one training step, mmdet's assigner + bitmaps vs ours, steps above 20 GiB
# stopped; about 30 min on 2 CPU cores
bench-dense: install
	$(PY) tools/benchmarks/bench_dense.py $(DENSE_ARGS) --out-md work_dirs/bench/dense.md --out-json work_dirs/bench/dense.json

# evaluation of 1000-detection results: pycocotools vs faster-coco-eval (time, speed-up, identical numbers)
bench-eval: install
	$(PY) tools/benchmarks/bench_eval.py --out-json work_dirs/bench/eval.json --out-md work_dirs/bench/eval.md

# stock R50 vs the full model and its ablations (+ torchvision), interleaved processes, ratios to R50 in one run
bench-models: install
	$(PY) tools/benchmarks/bench_models.py $(BENCH_ARGS) --out-md work_dirs/bench/models.md --out-json work_dirs/bench/models.json

bench-anchors: install
	$(PY) tools/benchmarks/bench_anchor_recall.py

# whole-scene inference vs SAHI (benchmark-only extra: requirements/bench.txt); about 20-30 min on 2 CPU cores
bench-scene: install
	$(PY) -m pip install -q -r requirements/bench.txt
	$(PY) tools/benchmarks/bench_scene.py

# region-scale scene inference: scenes/min with 1 and 2 processes (--shard), rerun time after a kill at 50 %
bench-region: install
	$(PY) tools/benchmarks/bench_region.py

# on a machine with an NVIDIA GPU: make install (CUDA build of mmcv), the cuda tests, the GPU benchmarks, inside
# GPU_CHECK_BUDGET seconds (default 480); report in work_dirs/gpu_check/report.md; without a GPU it stops at once
gpu-check:
	VENV=$(VENV) bash scripts/gpu_check.sh

clean:
	rm -rf work_dirs/demo .pytest_cache
