# The two set-up commands of the README:
#   make demo   install, then run the main job on sample_inputs/
#   make test   install (with the test and docs extras), then run the test suite (what .ci/run calls)
#   make mutants  the mutation harness: each change in tests/mutants/mutations.toml, applied to
#                 a copy of the tree, must fail its tests ("K of N killed"; not part of make test)
PYTHON ?= python3

.PHONY: install demo test bench mutants

# One pip command. torch==2.13.0 is named first so pip takes the CPU wheel this
# machine has on disk; the project's own range (torch>=2.1) then adds nothing,
# and no multi-gigabyte CUDA build is ever downloaded.
# The docs extra (mkdocs) is for tests/test_docs.py, which builds docs/ with mkdocs --strict.
install:
	$(PYTHON) -m pip install --disable-pip-version-check -q torch==2.13.0 -e '.[test,docs]'

demo: install
	GRADCLI="$(PYTHON) -m gradcli" sh sample_inputs/demo.sh

test: install
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) -m pip install --disable-pip-version-check -q -e '.[bench]'
	$(PYTHON) tests/benchmarks/bench.py

mutants:
	$(PYTHON) tests/mutants/run.py
