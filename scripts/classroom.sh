#!/usr/bin/env bash
# Serve the preference collector to a room: classroom/collect.ipynb as a standalone Voila page (no code, no
# JupyterLab) on 0.0.0.0:8866. Each student opens http://<this machine>:8866/, types their name and labels; their
# clicks go to their own file <labels dir>/<name>.jsonl, and typing the same name again resumes it. Afterwards:
#     .venv/bin/python -m rlhf_kit.ui.classroom <labels dir>      # files, counts, agreement, kappa, majority vote
#
#   bash scripts/classroom.sh                        # after scripts/setup.sh; Ctrl-C stops it
#   RLHF_KIT_CLASSROOM_PORT=9000 bash scripts/classroom.sh
#   bash scripts/classroom.sh --Voila.token=SECRET   # extra arguments go to voila (students then open /?token=SECRET)
#
# Environment (read here and by the notebook, whose kernels inherit it):
#   RLHF_KIT_CLASSROOM_PORT    port, default 8866 (it fails if the port is busy rather than move to another)
#   RLHF_KIT_CLASSROOM_PAIRS   a JSONL file of pairs {"pair_id", "prompt", "response_a", "response_b"} to label;
#                              default: the `preferences` stage of the workspace, built here first if missing
#   RLHF_KIT_CLASSROOM_DIR     where the students' files go; default <workspace root>/classroom
#   RLHF_KIT_CLASSROOM_BUDGET  pairs per student; default all (everyone gets the pairs in the same order)
#   RLHF_KIT_PRESET, RLHF_KIT_HOME   which workspace, as for the labs
#
# Voila starts one kernel per open page (about 100 MB each; the page does not import torch) and lets the page
# do nothing but drive the widgets: students cannot run code. Anyone who can reach the port can label, so serve
# it on a classroom network, or add a token as above.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

port=${RLHF_KIT_CLASSROOM_PORT:-8866}
if [ ! -x .venv/bin/python ]; then
    echo "classroom.sh: no .venv here; run scripts/setup.sh (or make lab) first." >&2
    exit 1
fi
if ! .venv/bin/python -c 'import voila' 2>/dev/null; then
    echo "classroom.sh: Voila is not installed. Install it with the tested version:" >&2
    echo "    .venv/bin/python -m pip install -c constraints.txt voila" >&2
    exit 1
fi

# Read the pairs once here, building the `preferences` stage if it is missing (minutes), so that no student's
# page waits for that build, and fix the labels folder for every kernel.
RLHF_KIT_CLASSROOM_DIR=$(.venv/bin/python - <<'PY'
import sys
from rlhf_kit.ui.classroom import classroom_budget, classroom_dir, classroom_pairs

pairs, budget, labels_dir = classroom_pairs(), classroom_budget(), classroom_dir().resolve()
labels_dir.mkdir(parents=True, exist_ok=True)
print(f"classroom.sh: {len(pairs)} pairs, {budget or len(pairs)} per student; labels in {labels_dir}/<name>.jsonl",
      file=sys.stderr)
print(labels_dir)
PY
)
export RLHF_KIT_CLASSROOM_DIR

echo "classroom.sh: students open http://<this machine>:$port/ ; addresses of this machine:" \
     "$(hostname -I 2>/dev/null || hostname)"
echo "classroom.sh: pool the labels with: .venv/bin/python -m rlhf_kit.ui.classroom $RLHF_KIT_CLASSROOM_DIR"
# --show_tracebacks: a broken setup (a bad pairs file) shows its error on the page instead of a blank one.
exec .venv/bin/voila classroom/collect.ipynb --no-browser --Voila.ip=0.0.0.0 --port="$port" \
    --Voila.port_retries=0 --show_tracebacks=True "$@"
