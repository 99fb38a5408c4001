# Set-up, tests and the offline demo. `make demo` and `make test` create .venv when missing.
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_output

.PHONY: setup test demo clean

# MegEngine 1.13.0 has wheels for Python 3.6-3.10 only: find a working python3.10 on PATH,
# then under pyenv.
$(VENV)/.installed: requirements.txt requirements-test.txt
	@py=""; \
	for candidate in python3.10 $$(ls -d "$${PYENV_ROOT:-$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)}"/versions/3.10.*/bin/python 2>/dev/null); do \
		if "$$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then py="$$candidate"; break; fi; \
	done; \
	if [ -z "$$py" ]; then \
		echo "error: Python 3.10 not found (MegEngine 1.13 has no wheel for newer Pythons); install it, e.g. 'pyenv install 3.10'" >&2; exit 1; \
	fi; \
	echo "creating $(VENV) with $$py"; \
	"$$py" -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-test.txt
	@touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
