#!/usr/bin/env bash
# The fast tests, for iterating: lint, labs/ up to date, and every unit test not marked slow (no notebooks, no
# browser, no end-to-end CLI chain), at the micro preset, in a throw-away workspace. Under 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export RLHF_KIT_PRESET=ci HF_HUB_OFFLINE=1 MPLBACKEND=Agg
export RLHF_KIT_HOME="$(mktemp -d -t rlhf-kit-test-XXXXXX)"
trap 'rm -rf "$RLHF_KIT_HOME"' EXIT
.venv/bin/ruff check rlhf_kit tests bench scripts
.venv/bin/rlhf-kit build-labs --check
.venv/bin/python -m pytest -p no:cacheprovider -q -m "not slow" --ignore=tests/test_browser.py tests "$@"
