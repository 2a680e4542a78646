# `make run`: set up .venv on first use, then start the web app on 127.0.0.1:7865.
# `make test`: set up .venv (and Chromium for the browser tests, Debian's ffmpeg for the decode tests), then run the
#   test suite without the tests marked slow (about 5 minutes on 2 cores); `make test-all`: every test;
#   `make test-slow`: only the slow ones.
# `make cli ARGS="..."`: the command line (`tools.cli`) with .venv's Python.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-all test-slow lint bench cli gpu-check browser test-deps setup

run: $(STAMP)
	$(PYTHON) infer-web.py $(ARGS)

test: $(STAMP) browser test-deps
	$(PYTHON) -m pytest -m "not slow" --durations=10 $(PYTEST_ARGS)

test-all: $(STAMP) browser test-deps
	$(PYTHON) -m pytest --durations=10 $(PYTEST_ARGS)

test-slow: $(STAMP) browser test-deps
	$(PYTHON) -m pytest -m slow --durations=10 $(PYTEST_ARGS)

# Lint (ruff) and type checks (mypy) with the settings in pyproject.toml.
lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

bench: $(STAMP)
	$(PYTHON) -m bench $(ARGS)

# The command line with the project's Python: `make cli ARGS="convert --model weights/a.pth --input in.wav"`.
cli: $(STAMP)
	$(PYTHON) -m tools.cli $(ARGS)

# On a machine with an NVIDIA GPU: the CUDA tests and the quick benchmarks on CUDA (< 8 min), one JSON report.
gpu-check: $(STAMP)
	$(PYTHON) -m bench.gpu_check $(ARGS)

setup: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PYTHON) || $(PY) -m venv $(VENV)
	@{ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep -q libportaudio || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libportaudio2 >/dev/null; } || \
	  echo "warning: could not install libportaudio2; realtime conversion will not find sound devices"
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

# Debian's Chromium for the real-browser tests (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: could not install chromium; browser tests will be skipped"

# Debian's ffmpeg binary: the tests check that the "rvc" decode (PyAV's bundled FFmpeg) gives the samples of the
# ffmpeg command line RVC runs. The app itself never needs it.
test-deps:
	@command -v ffmpeg >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; } || \
	  echo "warning: could not install ffmpeg; the tests comparing with the ffmpeg binary will be skipped"
