"""A classroom page in a process of its own, as each Voila kernel is one: for the name-claim tests
(tests/test_classroom_names.py).

    python tests/page_process.py LABELS_DIR NAME

It builds a ClassroomCollector on `make_pairs(3)` and prints "ready"; each line it then reads is a command: "start"
presses Start with NAME, "takeover" presses "Take it over", and "A", "B", "tie", "skip", "undo" click that button.
After each it prints one JSON line {"started", "path", "message", "status", "recorded"} ("recorded": the decisions
of its file). It stays alive, holding whatever it claimed, until its stdin closes.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classroom_pages import make_pairs  # noqa: E402  (tests/classroom_pages.py)

from rlhf_kit.preferences import PreferenceStore  # noqa: E402
from rlhf_kit.ui.classroom import ClassroomCollector  # noqa: E402

labels, name = Path(sys.argv[1]), sys.argv[2]
page = ClassroomCollector(labels, make_pairs(3))
page.name.value = name
print("ready", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "start":
        page.start_button.click()
    elif command == "takeover":
        page.takeover_button.click()
    else:
        page.collector.buttons[command].click()
    recorded = PreferenceStore(page.path).load() if page.path else []
    print(json.dumps({"started": page.collector is not None, "path": str(page.path) if page.path else None,
                      "message": page.message.value, "status": page.collector.status.value if page.collector else "",
                      "recorded": [(d["pair_id"], d["choice"]) for d in recorded]}), flush=True)
