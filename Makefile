# motionpairs: the two set-up commands are `make demo` (install, then the main job on a built-in
# default) and `make test` (install, then every test, offline, on CPU).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= ../shared
OUT    ?= demo-out
# pytest-xdist workers for `make test`, each running one test file at a time (CI has 2 cores)
TEST_WORKERS ?= 2

# offline switches (see ../shared/design/SETUP-NOTES.md)
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export YOLO_CONFIG_DIR ?= $(CURDIR)/.cache/ultralytics

.PHONY: setup browser test demo bench bench-gpu clean docs

$(BIN)/motionpairs: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/motionpairs browser

# the report's browser test needs headless Chromium (Debian's package; about a minute when missing)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "setup: installing chromium (apt-get)"; \
	    $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	    $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: setup
	$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile

demo: setup
	@if [ -d "$(SHARED)/data/videos" ]; then \
	  echo "demo: building from $(SHARED)/data/videos"; \
	  $(BIN)/motionpairs build --input "$(SHARED)/data/videos" --output "$(OUT)"; \
	else \
	  echo "demo: no $(SHARED)/data/videos here: building from the self-made astronaut clip"; \
	  $(BIN)/motionpairs demo-clip "$(OUT)-input" && \
	  $(BIN)/motionpairs build --input "$(OUT)-input" --output "$(OUT)" --config curation/configs/upper_body.yaml; \
	fi
	$(BIN)/motionpairs inspect "$(OUT)"

# regenerate docs/configuration.md from the config's field descriptions
docs: $(BIN)/motionpairs
	$(BIN)/python -m curation.configref --write

bench: setup
	$(BIN)/python bench/build_throughput.py --json --rss-check

# the GPU path, measured as it is (no edits needed on a GPU machine): stage throughput, GPU memory and
# utilisation, then video hours and pairs per GPU hour of a real build of ../shared/data/videos
bench-gpu: setup
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 2)" || \
	  { echo "bench-gpu: no CUDA device on this machine (torch.cuda.is_available() is false)" >&2; exit 2; }
	$(BIN)/python bench/build_throughput.py --device cuda --json
	$(BIN)/python bench/scale.py --device cuda --backends '' --plan-rows 0 --json

clean:
	rm -rf $(OUT) $(OUT)-input .cache .pytest_cache
