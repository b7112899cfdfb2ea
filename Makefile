# The README's commands. Each target creates .venv if needed and installs exactly what it uses.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned in pyproject (an unpinned torch pulls GBs of CUDA wheels); the constraint keeps
# every extra (executorch, nncf, modelopt ...) from moving it.
PIP    := $(BIN)/pip install --quiet --constraint constraints.txt
ART    := artifacts/demo
THREADS ?= 2
DEMO   ?= 1

.PHONY: demo test bench install-demo install-test install-browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e ".[build-openvino,report,demo]"
	touch $@

$(VENV)/.test-installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e ".[build-all,report,ray,demo,dev]"
	touch $@

install-demo: $(VENV)/.demo-installed
install-test: $(VENV)/.test-installed

# Debian's Chromium for the Playwright browser test (never a downloaded browser); installed only when
# absent and running as root with apt-get, else the browser test skips and says why.
install-browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi

## make demo: build the SynthMotion reference model for every installed CPU target, evaluate, benchmark, print the table
demo: install-demo
	$(BIN)/edgevid targets
	$(BIN)/edgevid build --model x3d_synth --target torch-cpu --out $(ART)
	$(BIN)/edgevid build --model x3d_synth --target onnx-cpu --precision fp32 --out $(ART)
	$(BIN)/edgevid build --model x3d_synth --target onnx-cpu --precision int8 --out $(ART)
	$(BIN)/edgevid build --model x3d_synth --target intel-cpu --precision fp32 --out $(ART)
	$(BIN)/edgevid build --model x3d_synth --target intel-cpu --precision int8 --out $(ART)
	VAL=$$($(BIN)/edgevid synth --split val --n 200) && for a in $(ART)/*/; do \
		$(BIN)/edgevid eval $$a --data $$VAL --threads $(THREADS) || exit 1; \
		$(BIN)/edgevid bench $$a --threads $(THREADS) --baseline eager || exit 1; done
	$(BIN)/edgevid report $(ART)
	@if [ "$(DEMO)" = "0" ]; then echo "DEMO=0: demo not launched (run: $(BIN)/edgevid demo $(ART))"; \
		else $(BIN)/edgevid demo $(ART); fi

## make test: the test suite (slow full-size exports are left to `make bench`)
test: install-test install-browser
	$(BIN)/python -m pytest -m "not slow" -q

## make bench: full-size exports and the speed benchmarks
bench: install-test
	$(BIN)/python -m pytest -m slow -q -s
	$(BIN)/python benchmarks/cpu_table.py --threads $(THREADS)
	$(BIN)/python benchmarks/streaming.py --threads $(THREADS)

clean:
	rm -rf $(VENV) artifacts .cache
