#!/usr/bin/env bash
# The whole test suite: unit tests, then every notebook in solutions/ and labs/ under nbval, all in the `ci`
# preset, in a fresh throw-away workspace so nothing built earlier by hand is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
export RLHF_KIT_PRESET=ci HF_HUB_OFFLINE=1 MPLBACKEND=Agg
export RLHF_KIT_HOME="$(mktemp -d -t rlhf-kit-test-XXXXXX)"
trap 'rm -rf "$RLHF_KIT_HOME"' EXIT
.venv/bin/ruff check rlhf_kit tests bench scripts
.venv/bin/rlhf-kit build-labs --check
# Build the ci workspace up to the reward model once, first: every notebook reuses these stages, and the
# browser tests' JupyterLab kernels then only run labs 02 and 04 instead of training models under their time limit.
.venv/bin/python -c 'from rlhf_kit.workspace import Workspace; print("built:", Workspace().ensure("reward"))'
.venv/bin/python -m pytest -p no:cacheprovider --nbval-lax --durations=15 tests solutions labs "$@"
