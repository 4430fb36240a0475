# wsi-deblur: `make run` processes the bundled blurred sample slide, `make test` runs lint, types and tests.
# Both set up .venv first (and install missing system packages with apt-get on a fresh Debian/Ubuntu machine).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := sample_slides/CMU-1-blurred.svs
OUT := out

.PHONY: run test lint typecheck pytest system-deps clean bench

run: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/wsi-deblur run $(SAMPLE) -o $(OUT)/CMU-1-blurred.ome.zarr -o $(OUT)/CMU-1-blurred.tif \
		--report $(OUT)/CMU-1-blurred.report --overwrite
	@echo "outputs: $(OUT)/CMU-1-blurred.ome.zarr  $(OUT)/CMU-1-blurred.tif"
	@echo "report:  $(OUT)/CMU-1-blurred.report/blurmap.png  summary.json  tiles.csv"

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check wsi_deblur tests benchmarks sample_slides workflows

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

system-deps:
	@if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then \
		echo "installing python3 and python3-venv with apt-get"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv python3-dev; \
	fi
	@# headless Chromium opens the batch's HTML index in the tests
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
		echo "installing chromium (headless browser for the HTML index test) with apt-get"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	fi

$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/python benchmarks/suite.py --out benchmarks/results

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
