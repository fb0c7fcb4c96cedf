# livedata — `make run` starts everything, `make test` installs and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)
PLUGIN := grafana-plugin
PORT ?= 8080
DATA ?= .data

.PHONY: run test install system-deps plugin lint typecheck pytest jest bench soak fuzz-long clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

# Debian packages the tests need: a real Redis, a real MQTT broker and its clients, and a real
# Chromium (never a downloaded browser).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	{ command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto; } || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

ifneq ($(wildcard $(PLUGIN)/package-lock.json),)
$(PLUGIN)/node_modules/.stamp: $(PLUGIN)/package-lock.json
	cd $(PLUGIN) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Each bundle is rebuilt only when one of its sources is newer than it, so a second `make run`
# starts in seconds. Tests (*.test.ts) are not sources of a bundle.
SOURCES = $(shell find $(addprefix $(PLUGIN)/,$(1)) -type f -not -name '*.test.ts' 2>/dev/null)
NPM_INPUTS := $(PLUGIN)/node_modules/.stamp $(PLUGIN)/package.json $(PLUGIN)/tsconfig.json $(PLUGIN)/.config/tsconfig.json
PLUGIN_OUT := $(PLUGIN)/dist/module.js
VIEWER_OUT := src/livedata/server/static/dist/viewer.js
HARNESS_OUT := $(PLUGIN)/dist-harness/harness.js
SCENES_OUT := $(PLUGIN)/dist-scenes/scenes.js

$(PLUGIN_OUT): $(NPM_INPUTS) $(call SOURCES,src) $(PLUGIN)/README.md $(PLUGIN)/.config/webpack/webpack.config.js
	cd $(PLUGIN) && npm run --silent build:plugin
	@touch $@

$(VIEWER_OUT): $(NPM_INPUTS) $(call SOURCES,viewer src/client src/store) $(PLUGIN)/.config/webpack/webpack.viewer.js
	cd $(PLUGIN) && npm run --silent build:viewer
	@touch $@

$(HARNESS_OUT): $(NPM_INPUTS) $(call SOURCES,harness) $(PLUGIN)/.config/webpack/webpack.harness.js
	cd $(PLUGIN) && npm run --silent build:harness
	@touch $@

# The @grafana/scenes test page (tests/browser/test_scenes.py): esbuild, also bundles harness/amd.ts.
$(SCENES_OUT): $(NPM_INPUTS) $(call SOURCES,scenes harness) $(PLUGIN)/.config/esbuild/scenes.mjs
	cd $(PLUGIN) && npm run --silent build:scenes
	@touch $@

plugin: $(PLUGIN_OUT) $(VIEWER_OUT) $(HARNESS_OUT) $(SCENES_OUT)
else
plugin:
	@true
endif

# ruff, then the layering contracts in pyproject.toml ([tool.importlinter]; docs/architecture.md).
lint: install
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy --strict src

pytest: install system-deps plugin
	$(BIN)/python -m pytest -q

jest: plugin install
ifneq ($(wildcard $(PLUGIN)/package-lock.json),)
	cd $(PLUGIN) && npm run --silent typecheck && npm run --silent lint && npm test --silent
endif

test: lint typecheck pytest jest

# History, rollups and positions are kept in $(DATA) (ignored by git): they survive a restart.
run: install plugin
	@echo "Live view: http://localhost:$(PORT)/"
	@echo "Grafana plugin built in $(PLUGIN)/dist (see README: Install in Grafana)"
	@echo "Data directory: $(DATA) (delete it to start afresh)"
	$(BIN)/livedata serve --port $(PORT) --data-dir $(DATA)

# Not part of `make test` (minutes of load on the machine). BENCH_ARGS="--quick" or "--scenario ws-10k --runs 1".
bench: install
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# Not part of `make test`: schemathesis and the WebSocket fuzzer at 10,000+ hostile cases per route
# (about 40 minutes on 2 cores; tests/security/test_openapi_fuzz.py says what is generated).
fuzz-long: install system-deps
	$(BIN)/python -m pytest -q -m long tests/security

# SOAK_ARGS="--minutes 30"
soak: install
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(PLUGIN)/node_modules $(PLUGIN)/dist $(PLUGIN)/dist-harness $(PLUGIN)/dist-scenes src/livedata/server/static/dist
