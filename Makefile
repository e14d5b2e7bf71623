# The two commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
UV_VERSION = 0.13.8
BIN = $(VENV)/bin
ARGS ?=
CHROMEDRIVER = /usr/bin/chromedriver
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)
# Taken when make starts, so the demo's wall time includes the install.
STARTED := $(shell date +%s.%N)

.PHONY: demo test lint docs lock clean

# The venv is rebuilt only when the pins change, so a second run starts at once.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --compile-bytecode requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --editable .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/omnishelf demo --started-at $(STARTED) $(ARGS)

# Lint, format, the docs site (a broken link or anchor fails it), then the tests.
test: lint docs $(CHROMEDRIVER)
	$(BIN)/python -m pytest $(ARGS)

# The report page's browser test drives Debian's Chromium through its ChromeDriver; Debian's
# packages are one of the machine's registries, and root (or sudo) installs them once.
$(CHROMEDRIVER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The docs site, into site/ (git-ignored); --strict turns every warning (a broken link or anchor)
# into a failure. Not --quiet: it hides the warnings from --strict too, and the build passes. The
# two variables silence banners about MkDocs' future that the theme and a dependency print.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --site-dir site

# Re-resolve the pins of pyproject.toml into the lock file.
lock: $(VENV)/.installed
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf data mlruns/* .bentoml site
