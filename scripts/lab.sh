#!/usr/bin/env bash
# Open the course in JupyterLab on lab 00 (after scripts/setup.sh). Extra arguments go to `jupyter lab`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)     # containers often run as root; JupyterLab refuses without this
exec .venv/bin/jupyter lab "${extra[@]}" --ServerApp.root_dir="$PWD" \
    --LabApp.default_url=/lab/tree/labs/00_meet_the_base_model.ipynb "$@"
