VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

serve: install
	$(VENV)/bin/overture serve

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/api.py

clean:
	rm -rf $(VENV) overture-data
