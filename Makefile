# The two commands of the README. Each installs what it needs first (scripts/setup.sh).
# DVC stages call `avpipe`: the venv's bin goes first on PATH.
.PHONY: setup demo test lint bench

setup:
	./scripts/setup.sh

demo: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/dvc repro

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	.venv/bin/python bench/faces.py --quick
	.venv/bin/python bench/audio.py
	.venv/bin/python bench/embed.py
	.venv/bin/python bench/dataset.py
	.venv/bin/python bench/train.py
	.venv/bin/python bench/scale.py
