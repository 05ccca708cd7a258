# Two commands do everything on a fresh clone:
#   make book   # set up, fetch the pinned offline assets, execute every chapter (profile offline), build the site
#   make test   # set up, then every test: unit tests, the smoke book through papermill + nbval, site build, browser check
# Other targets:
#   make book PROFILE=paper DEVICE=cuda     # the paper's exact setting (needs the Hugging Face Hub)
#   make chapter NB=04_core PARAMS="-p k_values '[128]'"   # re-execute one chapter with new parameters
#   make verify                             # re-execute the committed offline chapters under nbval
#   make site                               # rebuild the HTML from the executed chapters only
#   make book BOOK_FLAGS=--allow-dirty      # build the committed (offline) chapters from a modified tree;
#                                           #   refused otherwise, the chapters then record <sha>+dirty
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= offline
DEVICE ?= cpu
NB ?=
PARAMS ?=
BOOK_FLAGS ?=
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup assets browser book chapter site test verify unit clean-book benchmarks

$(VENV)/.stamp: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.stamp

assets: setup
	$(PY) -m vsae fetch --with-docs || (apt-get update -qq && $(PY) -m vsae fetch --with-docs)

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

book: assets
	$(PY) -m vsae.book build --profile $(PROFILE) --device $(DEVICE) $(BOOK_FLAGS)

chapter: assets
	@test -n "$(NB)" || (echo "usage: make chapter NB=04_core [PARAMS=\"-p name value ...\"] [PROFILE=offline]"; exit 2)
	$(PY) -m vsae.book chapter $(NB) --profile $(PROFILE) --device $(DEVICE) $(BOOK_FLAGS) -- $(PARAMS)

site: setup
	$(PY) -m vsae.book site --profile $(PROFILE)

test: browser assets
	$(PY) -m pytest -q -ra tests

unit: setup
	$(PY) -m pytest -q -ra tests --ignore=tests/test_book.py

verify: assets
	$(PY) -m vsae.book verify --profile offline

benchmarks: setup
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/harvest_throughput.py
	$(PY) benchmarks/eval_throughput.py

clean-book:
	rm -rf _build .stage
