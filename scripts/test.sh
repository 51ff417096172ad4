#!/usr/bin/env bash
# The whole test suite: unit tests, then every notebook in solutions/ and labs/ under nbval, all in the `ci`
# preset, in a fresh throw-away workspace so nothing built earlier by hand is reused.
# `test.sh --fast` (make test-fast), for iterating: lint, labs/ up to date, and every unit test not marked slow
# (no notebooks, no browser, no end-to-end CLI chain). Under 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export RLHF_KIT_PRESET=ci HF_HUB_OFFLINE=1 MPLBACKEND=Agg
export RLHF_KIT_HOME="$(mktemp -d -t rlhf-kit-test-XXXXXX)"
trap 'rm -rf "$RLHF_KIT_HOME"' EXIT
.venv/bin/ruff check rlhf_kit tests bench scripts
.venv/bin/rlhf-kit build-labs --check
if [ "${1:-}" = "--fast" ]; then
    shift
    .venv/bin/python -m pytest -p no:cacheprovider -q -m "not slow" --ignore=tests/test_browser.py tests "$@"
    exit
fi
# The notebooks build the ci workspace's stages (labs 00-03 with the learner's functions, as a learner's kernels
# do); the browser tests run after them (the root conftest.py orders them last), so their JupyterLab kernels find
# the stages built instead of training under the tests' time limit.
.venv/bin/python -m pytest -p no:cacheprovider --nbval-lax --durations=15 tests solutions labs "$@"
