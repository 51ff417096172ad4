"""Helpers shared by the classroom tests (test_classroom*.py): pairs and pages for the widget, and a Voila server
with pages driven the way a browser drives them, without one.

`Page` GETs the page (Voila runs the notebook in a fresh kernel), then talks to that kernel over the page's
websocket with the ipywidgets protocol (read the widgets' state, type the name, click Start and A/B), and on
`close` does what a closing browser tab does: tells Voila to shut the kernel down. It needs the packages voila
and websockets (`pip install -c constraints.txt voila`); without them `require_voila` skips with that reason,
unless $CI is set: then it fails.
"""

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from servers import free_port, in_ci, kill_processes_with  # tests/servers.py

from rlhf_kit.preferences import pair_id
from rlhf_kit.ui.classroom import ClassroomCollector

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "classroom" / "collect.ipynb"
INSTALL = "`.venv/bin/python -m pip install -c constraints.txt voila` (the `classroom` extra)"
START_TIMEOUT_S = 90          # Voila's server start, and each page: a fresh kernel runs the notebook
MESSAGE_TIMEOUT_S = 60        # one widget round trip through the kernel


# ------------------------------------------------------------------------------------------- the widget
def make_pairs(n=5):
    pairs = []
    for i in range(n):
        prompt, a, b = f"Write a review number {i}.", f"A fine review {i}.", f"review review review {i}"
        pairs.append({"pair_id": pair_id(prompt, a, b), "prompt": prompt, "response_a": a, "response_b": b,
                      "settings": {"k": 2}})
    return pairs


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def label_files(folder: Path) -> list[str]:
    """The names of the label files in a classroom folder (not its hidden .claims/)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def start(labels_dir, pairs, name, **kwargs) -> ClassroomCollector:
    page = ClassroomCollector(labels_dir, pairs, **kwargs)
    page.name.value = name
    page.start_button.click()
    return page


def click(page: ClassroomCollector, *keys):
    for key in keys:
        page.collector.buttons[key].click()


def write_pairs(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


# ------------------------------------------------------------------------------------------------ Voila
def require_voila():
    missing = []
    for module in ("voila", "websockets.sync.client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module.split(".")[0])
    if missing:
        reason = f"the Voila test needs the package(s) {', '.join(missing)}: install with {INSTALL}"
        if in_ci():
            pytest.fail(f"{reason}. $CI is set, so this is a failure, not a skip.", pytrace=False)
        pytest.skip(reason)


def voila_env(tmp_path: Path, pairs, labels: Path) -> dict:
    """The environment of a classroom server on `pairs`, writing into `labels`."""
    return {"RLHF_KIT_CLASSROOM_PAIRS": str(write_pairs(tmp_path / "pairs.jsonl", pairs)),
            "RLHF_KIT_CLASSROOM_DIR": str(labels), "RLHF_KIT_HOME": str(tmp_path / "home"), "RLHF_KIT_PRESET": "ci"}


@contextmanager
def voila_server(tmp_path: Path, env: dict, **room):
    """The classroom server of `rlhf_kit.ui.room.server_command(**room)` on 127.0.0.1 and a free port (what
    scripts/classroom.sh runs); yields its address, its log and the server process; stopped after."""
    from rlhf_kit.ui.room import server_command

    port, marker = free_port(), uuid.uuid4().hex
    state = tmp_path / "jupyter"
    env = {**os.environ, **env, "RLHF_KIT_VOILA_TEST": marker, "OMP_NUM_THREADS": "1",
           "JUPYTER_CONFIG_DIR": str(state / "config"), "JUPYTER_DATA_DIR": str(state / "data"),
           "JUPYTER_RUNTIME_DIR": str(state / "runtime"), "IPYTHONDIR": str(state / "ipython")}
    env.pop("CI", None)                                  # nothing in the notebook depends on it
    log_path = tmp_path / "voila.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(server_command(NOTEBOOK, ip="127.0.0.1", port=port, **room), env=env, cwd=REPO,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"voila exited with code {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"voila did not listen on port {port} within {START_TIMEOUT_S} s:\n"
                                       f"{log_path.read_text()[-3000:]}") from None
                time.sleep(0.3)
        yield f"127.0.0.1:{port}", log_path, server
    finally:
        server.send_signal(signal.SIGTERM)               # Voila shuts its kernels down
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        kill_processes_with(f"RLHF_KIT_VOILA_TEST={marker}".encode())


def get(url: str, timeout: float = START_TIMEOUT_S) -> tuple[int, str, dict]:
    """(status, body, cookies) of a GET; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body, headers = response.status, response.read().decode("utf-8"), response.headers
    except urllib.error.HTTPError as error:
        status, body, headers = error.code, error.read().decode("utf-8"), error.headers
    cookies = dict(c.split(";")[0].split("=", 1) for c in headers.get_all("Set-Cookie") or [])
    return status, body, cookies


class Page:
    """One student's page: GET it (Voila runs the notebook in a new kernel), then drive its widgets over the
    kernel's websocket as the browser would (ipywidgets message protocol 2, control protocol 1)."""

    def __init__(self, address: str, log_path: Path, token: str = "", timeout_s: float = START_TIMEOUT_S):
        from websockets.sync.client import connect

        self.address, self.token = address, token
        query = f"?token={urllib.parse.quote(token)}" if token else ""
        self.status, self.html, self.cookies = get(f"http://{address}/{query}", timeout=timeout_s)
        assert self.status == 200, f"the page answered {self.status}:\n{self.html[-2000:]}"
        found = re.search(r'"kernelId": "([0-9a-f-]+)"', self.html)
        assert found, f"no kernelId in the Voila page:\n{self.html[-3000:]}\n{log_path.read_text()[-3000:]}"
        self.kernel_id, self.session, self.states = found.group(1), uuid.uuid4().hex, {}
        self._closing = ExitStack()
        self.ws = self._closing.enter_context(connect(
            f"ws://{address}/api/kernels/{self.kernel_id}/channels?session_id={self.session}"
            + (f"&token={urllib.parse.quote(token)}" if token else ""), max_size=None,
            open_timeout=timeout_s))
        control = uuid.uuid4().hex
        self._send("comm_open", {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
                   metadata={"version": "1.0.0"})
        self._send("comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
        self.wait(lambda: self.states, "the widgets' state", timeout_s)

    def _send(self, msg_type: str, content: dict, metadata=None):
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "student", "session": self.session,
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "version": "5.3"}
        self.ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": metadata or {},
                                 "content": content, "channel": "shell", "buffers": []}))

    def _receive(self, timeout: float) -> None:
        message = self.ws.recv(timeout=timeout)
        if isinstance(message, bytes):                   # a message with binary buffers: none of ours
            return
        message = json.loads(message)
        content, kind = message["content"], message["msg_type"]
        if kind == "comm_open" and content.get("target_name") == "jupyter.widget":
            self.states[content["comm_id"]] = dict(content["data"]["state"])
        elif kind == "comm_msg" and content["data"].get("method") == "update_states":
            self.states.update({k: dict(v["state"]) for k, v in content["data"]["states"].items()})
        elif kind == "comm_msg" and content["data"].get("method") == "update":
            self.states.setdefault(content["comm_id"], {}).update(content["data"]["state"])
        elif kind == "stream" and content.get("name") == "stderr":
            print("kernel stderr:", content["text"])

    def wait(self, predicate, what: str, timeout_s: float = MESSAGE_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the page did not show {what} within {timeout_s} s")
            try:
                self._receive(timeout=left)
            except TimeoutError:
                pass

    def find(self, css: str) -> tuple[str, dict]:
        hits = [(k, s) for k, s in self.states.items() if css in s.get("_dom_classes", [])]
        assert len(hits) == 1, f"{len(hits)} widgets with class {css!r}"
        return hits[0]

    def value(self, css: str):
        """The value of the widget with class `css`, None while there is none."""
        hits = [s for s in self.states.values() if css in s.get("_dom_classes", [])]
        return hits[0].get("value") if len(hits) == 1 else None

    def type(self, css: str, text: str):
        self._send("comm_msg", {"comm_id": self.find(css)[0],
                                "data": {"method": "update", "state": {"value": text}, "buffer_paths": []}})

    def click(self, css: str):
        self._send("comm_msg", {"comm_id": self.find(css)[0],
                                "data": {"method": "custom", "content": {"event": "click"}}})

    def disconnect(self):
        """Drop the websocket only, as a browser that crashed or lost the network does: the kernel stays."""
        self._closing.close()

    def close(self):
        """What closing the tab does: drop the websocket and send what Voila's page sends on `beforeunload`, a
        POST to shut the kernel down with the page's cookies (login, _xsrf) and its _xsrf as a form field."""
        self.disconnect()
        assert "_xsrf" in self.cookies, "the page set no _xsrf cookie, so closing it cannot shut its kernel down"
        request = urllib.request.Request(
            f"http://{self.address}/voila/api/shutdown/{self.kernel_id}", method="POST",
            data=urllib.parse.urlencode({"_xsrf": self.cookies["_xsrf"]}).encode(),
            headers={"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
                     "Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=MESSAGE_TIMEOUT_S) as response:
            assert response.status == 204, response.status
