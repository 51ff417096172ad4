#!/usr/bin/env bash
# Serve the preference collector to a room: classroom/collect.ipynb as a standalone Voila page (no code, no
# JupyterLab). Each student opens the printed address, types their name and labels; their clicks go to their own
# file <labels dir>/<name>.jsonl, and typing the same name again resumes it. Afterwards:
#     .venv/bin/python -m rlhf_kit.ui.classroom <labels dir>      # files, counts, agreement, kappa, majority vote
#
#   bash scripts/classroom.sh                        # this machine only (127.0.0.1:8866); Ctrl-C stops it
#   bash scripts/classroom.sh --ip 0.0.0.0           # the classroom network; prints the link with a random token
#   bash scripts/classroom.sh --ip 0.0.0.0 --token otter   # students open /?token=otter, or type otter
#   bash scripts/classroom.sh --max-pages 30 --idle-minutes 10
#
# Options (python -m rlhf_kit.ui.room --help; anything else goes to voila):
#   --ip ADDR           default 127.0.0.1 (only this machine); 0.0.0.0 opens the room to the network
#   --port N            default $RLHF_KIT_CLASSROOM_PORT or 8866 (it fails if the port is busy rather than move)
#   --token WORD        the password students need; default: none on 127.0.0.1, a random one on a network
#   --no-token          no token even on a network (anyone who can reach the port can label)
#   --max-pages N       the most pages open at once, default 40; one more gets a "room full" page
#   --idle-minutes M    a page with no click for M minutes is closed (its kernel culled), default 20
#
# Environment (read here and by the notebook, whose kernels inherit it):
#   RLHF_KIT_CLASSROOM_PAIRS   a JSONL file of pairs {"pair_id", "prompt", "response_a", "response_b"} to label;
#                              default: the `preferences` stage of the workspace, built here first if missing
#   RLHF_KIT_CLASSROOM_DIR     where the students' files go; default <workspace root>/classroom
#   RLHF_KIT_CLASSROOM_BUDGET  pairs per student; default all (everyone gets the pairs in the same order)
#   RLHF_KIT_PRESET, RLHF_KIT_HOME   which workspace, as for the labs
#
# Voila starts one kernel per open page (about 100 MB each; the page does not import torch) and lets the page
# do nothing but drive the widgets: students cannot run code. A closed or reloaded page shuts its kernel down.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

if [ ! -x .venv/bin/python ]; then
    echo "classroom.sh: no .venv here; run scripts/setup.sh (or make lab) first." >&2
    exit 1
fi
if ! .venv/bin/python -c 'import voila' 2>/dev/null; then
    echo "classroom.sh: Voila is not installed. Install it with the tested version:" >&2
    echo "    .venv/bin/python -m pip install -c constraints.txt voila" >&2
    exit 1
fi

# The pairs are read (the `preferences` stage built if missing: minutes) and the labels folder fixed for every
# kernel before the server starts; its settings (address, token, page cap, idle culling): rlhf_kit/ui/room.py.
exec .venv/bin/python -m rlhf_kit.ui.room classroom/collect.ipynb "$@"
