# The front door. `make help` lists the targets.
PYTHON ?= .venv/bin/python
PIP ?= .venv/bin/pip
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
MINI_SEEDS ?= 0,1,2

.PHONY: help install demo test test-slow test-kvpress reliability smoke mini collect figures tables index results fig-acm-tradeoff bench-acm bench-alast bench-kv bench-gpu bench-figures clean-outputs

help: ## list the targets
	@grep -hE '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.venv:
	python3 -m venv .venv

install: .venv ## create .venv and install the package with its pinned torch stack (~3 min)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0 -e ".[audio,dev,peft]"

demo: ## run the embedded default experiment (Chapter 2 miniature, ~1 min on 2 cores)
	$(PYTHON) -m thesis.run experiment=condcomp_mini

test: ## the default test suite (CPU, offline, < 10 min)
	$(PYTHON) -m pytest -q

test-slow: ## the tests marked slow
	$(PYTHON) -m pytest -q -m slow

test-kvpress: ## KV presses vs kvpress 0.5.5 on a tiny random Llama (side env .kvpress/ with transformers 5.2; spec F.c)
	PYTHON=$(PYTHON) bash scripts/kvpress_env.sh
	PYTHONPATH=.kvpress HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m kvpress tests/kvcache/test_kvpress_parity.py tests/test_bench.py

reliability: ## DDP, submitit sweeps, kill/resume, atomic writes and bad input, end to end; prints a table (~5 min)
	$(PYTHON) scripts/reliability.py

smoke: ## every experiment at scale=smoke, through the launcher
	@for e in $$($(PYTHON) -c "from thesis.core.compose import experiments; print(' '.join(experiments()))"); do \
	  echo "== $$e"; $(PYTHON) -m thesis.run experiment=$$e scale=smoke paths.output_dir=outputs/smoke || exit 1; done

mini: ## every miniature replication (seeds $(MINI_SEEDS)), then collect, figures, tables, index
	@for e in $$($(PYTHON) -c "from thesis.core.compose import experiments; print(' '.join(e for e in experiments() if e.endswith('_mini')))"); do \
	  echo "== $$e"; $(PYTHON) -m thesis.run -m experiment=$$e seed=$(MINI_SEEDS) || exit 1; done
	$(MAKE) results

collect: ## gather finished run dirs under outputs/ into results/<experiment>/*.csv
	$(PYTHON) -m thesis.results collect --outputs outputs

figures: ## rebuild every figure from the CSVs in results/
	$(PYTHON) -m thesis.results figures

tables: ## rebuild every table from the CSVs in results/
	$(PYTHON) -m thesis.results tables

index: ## regenerate results/README.md
	$(PYTHON) -m thesis.results index

results: collect figures tables index ## collect, figures, tables, index

fig-acm-tradeoff: ## the ACM accuracy-vs-FLOPs trade-off figure (thesis Fig. 3.4) from committed CSVs
	$(PYTHON) -m thesis.results render acm_cost_vs_acc

fig-%: ## rebuild one figure or table: make fig-<id> (ids: python -m thesis.results list)
	$(PYTHON) -m thesis.results render $*

bench-acm: ## ACM layer and ACM-ViT-B latency vs dense on the GPU (Triton kernels) -> results/bench/acm_*
	$(PYTHON) benchmarks/acm_kernel.py
	$(PYTHON) benchmarks/acm_vit.py
	$(PYTHON) benchmarks/readme.py

bench-alast: ## ALaST vs FT full training step on ViT-B: time, peak memory, FLOPs (CUDA, else CPU) -> results/bench/alast_step.*
	$(PYTHON) benchmarks/alast_step.py
	$(PYTHON) benchmarks/readme.py

bench-kv: ## KV presses on an 8B-shaped Llama: prefill scoring overhead, cache bytes, decoding tokens/s (CUDA, else 1 layer on CPU) -> results/bench/kv_cache.*
	$(PYTHON) benchmarks/kv_cache.py
	$(PYTHON) benchmarks/readme.py

bench-gpu: ## every benchmark on one GPU within BUDGET seconds (default 1800), logs in logs/bench/ -> results/bench/
	bash benchmarks/gpu_all.sh $(or $(BUDGET),1800) $(PYTHON)

bench-figures: ## rebuild the benchmark figures and results/bench/README.md from the committed CSVs
	$(PYTHON) benchmarks/acm_kernel.py --plot-only
	$(PYTHON) benchmarks/acm_vit.py --plot-only
	$(PYTHON) benchmarks/alast_step.py --plot-only
	$(PYTHON) benchmarks/readme.py

clean-outputs: ## delete outputs/ (run dirs, checkpoints, fixtures)
	rm -rf outputs
