# Set-up, tests and the offline demo. `make demo` and `make test` create .venv when missing.
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_output
DEMO_CONFIG := official/vision/detection/configs/fcos_res18_synthetic_demo.py
FINETUNE_CONFIG := official/vision/detection/configs/fcos_res18_synthetic_finetune.py
SYNTHETIC_SHAPES := --size 96-128 --max-objects 4 --object-scale 0.2-0.6
# The demos train on the trainer's defaults (on the CPU: the traced step at async level 0,
# docs/training.md)
DEMO_TRAIN_FLAGS := -b 8

CUSTOM_OPS_DIR := official/vision/detection/cpu/custom_ops
CUSTOM_OPS_LIBRARY := $(VENV)/lib/libfcos_cpu_ops.so

.PHONY: setup chromium test demo serve finetune-benchmark clean

# MegEngine 1.13.0 has wheels for Python 3.6-3.10 only: find a working python3.10 on PATH,
# then under pyenv. What the package, its training and evaluation run with (requirements.txt)
# is installed first, with the package itself in editable mode, so tools and tests import
# this checkout: the demo needs no more. Export (ONNX, OpenVINO, mgeconvert) and the server
# come next, for `make setup`, `make test` and `make serve`: ~20 s of the demo's first run on
# 2 cores (docs/benchmarks.md, "The demo"). mgeconvert installs on its own, with the option
# file its setup.py needs (requirements-mgeconvert.txt). The tests' own packages (pytest,
# Playwright, Ray) come last.
$(VENV)/.installed: requirements.txt pyproject.toml
	@py=""; \
	for candidate in python3.10 $$(ls -d "$${PYENV_ROOT:-$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)}"/versions/3.10.*/bin/python 2>/dev/null); do \
		if "$$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then py="$$candidate"; break; fi; \
	done; \
	if [ -z "$$py" ]; then \
		echo "error: Python 3.10 not found (MegEngine 1.13 has no wheel for newer Pythons); install it, e.g. 'pyenv install 3.10'" >&2; exit 1; \
	fi; \
	echo "creating $(VENV) with $$py"; \
	"$$py" -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

$(VENV)/.installed-extras: $(VENV)/.installed requirements-export.txt requirements-serve.txt \
		requirements-mgeconvert.txt mgeconvert-install.cfg
	$(PY) -m pip install --quiet -r requirements-export.txt -r requirements-serve.txt
	DIST_EXTRA_CONFIG=$(CURDIR)/mgeconvert-install.cfg $(PY) -m pip install --quiet --no-deps \
		-r requirements-mgeconvert.txt
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed-extras requirements-test.txt requirements-ray.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	@touch $@

# The CPU training operators (oneDNN convolutions, one-pass optimizer updates: a MegEngine
# custom-operator library) need g++: as root it is installed from Debian's packages when
# missing. Without it the build says why in one line and training keeps MegEngine's operators.
$(CUSTOM_OPS_LIBRARY): $(wildcard $(CUSTOM_OPS_DIR)/*.cpp $(CUSTOM_OPS_DIR)/*.h) $(CUSTOM_OPS_DIR)/library.py \
		$(VENV)/.installed
	@if ! command -v g++ >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing g++ (Debian's package) for the CPU training operators"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; \
	fi
	-$(PY) -c 'from official.vision.detection.cpu.custom_ops.library import main; main()'

setup: $(VENV)/.installed-test $(CUSTOM_OPS_LIBRARY) chromium

# The page's test (tests/test_serve_page.py) drives Debian's Chromium; installed here where it is
# missing and we are root (as CI runs), else one line says how.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's chromium for the page's test"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
		else \
			echo "error: the page's test needs Chromium at $(CHROMIUM): install it (sudo apt-get install chromium) or give its path, make CHROMIUM=/path/to/chromium" >&2; exit 1; \
		fi; \
	fi

test: setup
	CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q

# The main job, offline: synthetic COCO-format data -> train -> COCO evaluation -> pictures.
# Batches load in the training process: a loader process took ~3% of the two cores' time.
demo: $(VENV)/.installed $(CUSTOM_OPS_LIBRARY)
	rm -rf $(DEMO_DIR)
	$(PY) tools/make_synthetic_coco.py -o $(DEMO_DIR)/data/synthetic --train 800 --val 100 \
		--classes 3 --seed 0 $(SYNTHETIC_SHAPES)
	$(PY) tools/train.py -f $(DEMO_CONFIG) -d $(DEMO_DIR)/data -o $(DEMO_DIR)/train $(DEMO_TRAIN_FLAGS) --workers 0
	$(PY) tools/inference.py -f $(DEMO_CONFIG) -w $(DEMO_DIR)/train -d $(DEMO_DIR)/data \
		-i $(DEMO_DIR)/data/synthetic/val -o $(DEMO_DIR)/pictures -b 4
	$(PY) tools/test.py -f $(DEMO_CONFIG) -w $(DEMO_DIR)/train -d $(DEMO_DIR)/data -b 4

# The model `make demo` trained, served at http://127.0.0.1:8000 (the page at /; docs/serving.md).
serve: $(VENV)/.installed-extras
	@test -d $(DEMO_DIR)/train || { echo "error: run 'make demo' first: it trains the model to serve" >&2; exit 1; }
	$(PY) tools/serve.py -f $(DEMO_CONFIG) -w $(DEMO_DIR)/train -d $(DEMO_DIR)/data

# Fine-tuning the demo's 3-class detector on 4 classes vs training from scratch, same schedule
# (README, "Fine-tuning"). Needs the model `make demo` trained.
finetune-benchmark: $(VENV)/.installed $(CUSTOM_OPS_LIBRARY)
	@test -d $(DEMO_DIR)/train || { echo "error: run 'make demo' first: it trains the model to fine-tune from" >&2; exit 1; }
	rm -rf $(DEMO_DIR)/four_shapes $(DEMO_DIR)/scratch $(DEMO_DIR)/finetune
	$(PY) tools/make_synthetic_coco.py -o $(DEMO_DIR)/four_shapes/synthetic --train 400 --val 100 \
		--classes 4 --seed 1 $(SYNTHETIC_SHAPES)
	$(PY) tools/train.py -f $(FINETUNE_CONFIG) -d $(DEMO_DIR)/four_shapes -o $(DEMO_DIR)/scratch \
		$(DEMO_TRAIN_FLAGS) --workers 1
	$(PY) tools/train.py -f $(FINETUNE_CONFIG) -d $(DEMO_DIR)/four_shapes -o $(DEMO_DIR)/finetune \
		$(DEMO_TRAIN_FLAGS) --workers 1 --finetune $(DEMO_DIR)/train
	$(PY) tools/test.py -f $(FINETUNE_CONFIG) -w $(DEMO_DIR)/scratch $(DEMO_DIR)/finetune \
		-d $(DEMO_DIR)/four_shapes -b 4

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
