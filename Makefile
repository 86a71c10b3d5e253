# Two commands a fresh clone needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.milimo-installed

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint setup system reference bench gpu-bench gpu-wheels clean

# The oracle: Lightricks' ltx-core / ltx-pipelines 1.0.0 in their own venv, run by the parity tests as a
# subprocess. They declare torch~=2.7 and torchaudio: torch is the CPU 2.13.0 build on disk (as in .venv), and
# torchaudio 2.11.0 (the newest) is installed without its dependencies and without its compiled extensions, which
# are built against CUDA and are not used by ltx-core (it imports torchaudio's pure-Python functions only).
REF_VENV  ?= .venv-ref
REF_PY    := $(REF_VENV)/bin/python
REF_STAMP := $(REF_VENV)/.milimo-reference

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# CPU torch first: with 2.13.0 in place, the project's `torch>=2.13.0` installs nothing more.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,lint]"
	touch $(STAMP)

# System tools the tests drive: ffprobe (Debian's ffmpeg) reads back timecode and audio of the takes; Debian's
# chromium is the browser Playwright drives (Playwright cannot download its own here); DejaVu is the preview's
# burn-in font. Installed with apt-get
# when running as root and missing; otherwise the tests say what to install.
SYSTEM_PACKAGES := $(if $(shell command -v ffprobe),,ffmpeg) $(if $(wildcard /usr/bin/chromium),,chromium) \
	$(if $(wildcard /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf),,fonts-dejavu-core)
system:
	@if [ -n "$(strip $(SYSTEM_PACKAGES))" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES)) >/dev/null; \
	  else echo "note: install $(SYSTEM_PACKAGES) (Debian: apt-get install) for the timecode and browser tests"; fi; fi

$(REF_PY):
	$(PYTHON) -m venv $(REF_VENV) || python3 -m venv $(REF_VENV)

$(REF_STAMP): $(REF_PY) tests/oracle/requirements.txt
	$(REF_PY) -m pip install -q --upgrade pip
	$(REF_PY) -m pip install -q "torch==2.13.0"
	$(REF_PY) -m pip install -q --no-deps "torchaudio==2.11.0"
	rm -f $(REF_VENV)/lib/python*/site-packages/torchaudio/lib/*.so
	$(REF_PY) -m pip install -q -r tests/oracle/requirements.txt
	$(REF_PY) -c "import ltx_core, ltx_pipelines.ti2vid_two_stages, torchaudio"
	touch $(REF_STAMP)

reference: $(REF_STAMP)

setup: $(STAMP) system reference

# The example storyboard end to end: tiny model, SQLite (renders/milimo.db), Prefect's local server.
demo: $(STAMP)
	$(VENV)/bin/milimo render storyboards/examples/lighthouse.otio
	$(VENV)/bin/milimo status storyboards/examples/lighthouse.otio

# Two workers (this machine's two cores): a test's renders run beside another test's start-up, I/O and waits.
# A module whose tests share one render stays on one worker (`xdist_group`).
test: $(STAMP) system reference
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=15

# The pure layer (no render, no browser, no oracle): the inner loop, under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m fast -n 2 --dist loadgroup

# ruff (E, F, I, B, UP) and mypy, configured in pyproject.toml; CI runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# A bare GPU machine with PyPI: PyPI's torch wheel for Linux is the CUDA build (the CPU one is this machine's own).
GPU_VENV := .venv-gpu
gpu-bench:
	python3 -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cu130
	$(GPU_VENV)/bin/python -m pip install -q -e .
	$(GPU_VENV)/bin/python bench/gpu.py

# The wheels a lent H200 lacks (its image has torch, transformers, peft, accelerate; no network there): carried
# as `.whl` (see bench/gpu.py's docstring).
gpu-wheels:
	grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl "diffusers==0.42.1" "importlib_metadata"

bench: $(STAMP)
	$(PY) bench/engine.py
	$(PY) bench/orchestration.py
	$(PY) bench/review_pages.py

clean:
	rm -rf $(VENV) $(REF_VENV) renders .pytest_cache
