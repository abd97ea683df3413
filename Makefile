VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every package that make install puts in .venv, pinned with hashes: the dependencies, the test, dev and
# ray extras (lint tools, uv, pip, the build backend). Compiled by `make lock` from pyproject.toml and
# the torch pin in constraints.txt: edit those, never the lock, then run make lock or make upgrade.
LOCK := requirements.lock
# uv reads no pip configuration, so it is handed pip's own sources (config files and PIP_* alike): the
# index, pip's extra indexes, and find-links (here the directory with the CPU torch wheel). The index
# comes first, as an extra index too: uv takes a version's files, and so the lock's hashes, from the
# first index that has that version, and pip's extra indexes here are partial copies of PyPI. Handed
# first, one of them gave a pin only the files it holds (soundfile: the wheel without libsndfile).
# unsafe-best-match takes the best version across all of them, as pip does (torch 2.13.0+cpu).
PIP_SOURCES := $(PY) -c 'from pip._internal.commands import create_command; \
	o = create_command("install").parse_args([])[0]; \
	print(*["--index-url=" + o.index_url], \
	*["--extra-index-url=" + u for u in [o.index_url, *o.extra_index_urls]], \
	*["--find-links=" + f for f in o.find_links])'
LOCK_ARGS := --quiet --python $(PY) --generate-hashes --index-strategy unsafe-best-match \
	--extra test --extra dev --extra ray --constraint constraints.txt --output-file $(LOCK) pyproject.toml

.PHONY: install lock upgrade lint serve test test-postgres bench clean playground

install: $(STAMP) playground

# The playground (web/, docs/playground.md): rebuilt from its source and package-lock.json into
# src/overture/playground where node and npm exist. The build is committed, so without node, or when
# npm ci cannot reach the registry, the server still serves the last one (under CI a failed build
# fails), and tests/test_playground.py checks that it is not stale.
PLAYGROUND_STAMP := web/node_modules/.built
PLAYGROUND_SOURCES := $(wildcard web/src/*.ts web/src/*/*.ts web/src/*.css) web/index.html web/build.mjs web/package-lock.json

playground: $(PLAYGROUND_STAMP)

$(PLAYGROUND_STAMP): $(PLAYGROUND_SOURCES)
	@if ! command -v npm >/dev/null || ! command -v node >/dev/null; then \
		echo "node and npm are missing: serving the committed playground build (apt-get install nodejs npm to rebuild it)"; \
	elif (cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs && touch node_modules/.built); then \
		:; \
	elif [ -n "$$CI" ]; then \
		echo "the playground did not build (npm ci or node build.mjs failed above)" >&2; exit 1; \
	else \
		echo "the playground did not build (npm ci needs the npm registry; see above): serving the committed build"; \
	fi

# --require-hashes: pip installs nothing that is not in the lock, nor a file whose hash differs.
# Then the project itself, editable, with nothing more: its dependencies are all in the lock.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve the lock after editing pyproject.toml or constraints.txt; pins that still fit are kept,
# with their hashes. With LOCK_UPGRADE=--upgrade every pin moves to the newest release allowed (make
# upgrade's first step). Only resolves, with .venv's uv and pip (made by make install if missing).
lock: | $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile $(LOCK_UPGRADE) $$($(PIP_SOURCES)) --custom-compile-command "make lock" $(LOCK_ARGS)

$(VENV)/bin/uv:
	rm -f $(STAMP)
	$(MAKE) install

# Every dependency to the newest release that pyproject.toml and constraints.txt allow: the lock is
# re-resolved, then installed. Commit the new requirements.lock once the tests pass.
upgrade: install
	$(MAKE) lock LOCK_UPGRADE=--upgrade
	$(MAKE) install

# ruff on the whole tree, mypy on src/ (settings in pyproject.toml), and TypeScript's checks on the
# playground's source where make install could install them (node); under CI, their absence fails.
# All run; any failure fails.
lint: install
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	if [ -x web/node_modules/.bin/tsc ]; then (cd web && node_modules/.bin/tsc --noEmit -p .) || status=1; \
	elif [ -n "$$CI" ]; then echo "missing in CI: web/node_modules (node and npm)" >&2; status=1; \
	else echo "web/: TypeScript's checks skipped (no node)"; fi; \
	exit $$status

serve: install
	$(VENV)/bin/overture serve

test: install
	$(PY) -m pytest

# The tests that exercise the store, again on a throwaway PostgreSQL cluster that .ci/postgres
# starts and always removes (docs/database.md); every other test can run there too the same way.
POSTGRES_TESTS := tests/test_database_url.py tests/test_migrations.py tests/test_store_databases.py \
	tests/test_engine.py tests/test_crash.py tests/test_webhooks.py tests/test_webhook_giveup.py \
	tests/test_lifecycle.py tests/test_retention.py tests/test_usage.py \
	tests/test_conformance.py::test_a_database_from_before_deployments_gets_the_column_on_start

test-postgres: install
	.ci/postgres $(PY) -m pytest $(POSTGRES_TESTS)

bench: install
	$(PY) benchmarks/api.py

clean:
	rm -rf $(VENV) overture-data
