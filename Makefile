# Two commands a fresh clone needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.milimo-installed

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test setup system bench clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# CPU torch first: with 2.13.0 in place, the project's `torch>=2.13.0` installs nothing more.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# System tools the tests drive: ffprobe (Debian's ffmpeg) reads back timecode and audio of the takes; Debian's
# chromium is the browser Playwright drives (Playwright cannot download its own here). Installed with apt-get
# when running as root and missing; otherwise the tests say what to install.
SYSTEM_PACKAGES := $(if $(shell command -v ffprobe),,ffmpeg) $(if $(wildcard /usr/bin/chromium),,chromium)
system:
	@if [ -n "$(strip $(SYSTEM_PACKAGES))" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES)) >/dev/null; \
	  else echo "note: install $(SYSTEM_PACKAGES) (Debian: apt-get install) for the timecode and browser tests"; fi; fi

setup: $(STAMP) system

# The example storyboard end to end: tiny model, SQLite (renders/milimo.db), Prefect's local server.
demo: $(STAMP)
	$(VENV)/bin/milimo render storyboards/examples/lighthouse.otio
	$(VENV)/bin/milimo status storyboards/examples/lighthouse.otio

test: $(STAMP) system
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/engine.py
	$(PY) bench/orchestration.py

clean:
	rm -rf $(VENV) renders .pytest_cache
