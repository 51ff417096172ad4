"""The classroom server (`rlhf_kit.ui.room`, run by scripts/classroom.sh): it listens on 127.0.0.1 unless told
otherwise and needs a token on a network, caps the pages (kernels) open at once with a "room full" page, culls idle
kernels, and its pages import no torch. The load test serves 30 simulated students at once and measures the memory
of the server's process tree.
"""

import asyncio
import concurrent.futures
import threading
import time

import psutil
import pytest
from classroom_pages import Page, get, make_pairs, require_voila, voila_env, voila_server

from rlhf_kit.preferences import CHOICES, PreferenceStore
from rlhf_kit.ui import room
from rlhf_kit.ui.classroom import clean_name

STUDENTS = 30
CLICKS = 5
# The stated ceiling for 30 open pages: the server and its 30 kernels, resident memory summed over the processes
# (RSS, which counts the shared libraries in every process, so it overstates the real use). Measured: 1784 MB
# (about 59 MB per page; 1296 MB PSS) on a 2-core Linux machine. A page that loaded transformers again would add
# about 35 MB per kernel (2.8 GB), one that loaded torch about 300 MB (over 10 GB): both far above it.
CEILING_MB = 2500
LOAD_DEADLINE_S = 300       # the whole load test, server start to shutdown (27 s measured on 2 CPU cores)
PAGE_TIMEOUT_S = 180        # one page under load, 30 kernels starting at once


# ---------------------------------------------------------------------------------------- the command
def test_the_server_listens_on_this_machine_only_by_default():
    command = room.server_command()
    assert "--Voila.ip=127.0.0.1" in command and "--Voila.token=" in command
    assert "--VoilaConfiguration.multi_kernel_manager_class=rlhf_kit.ui.room.RoomKernelManager" in command
    assert f"--RoomKernelManager.max_kernels={room.DEFAULT_MAX_PAGES}" in command
    assert f"--MappingKernelManager.cull_idle_timeout={room.DEFAULT_IDLE_MINUTES * 60}" in command
    assert "--MappingKernelManager.cull_interval=60" in command
    assert "--MappingKernelManager.cull_connected=True" in command


def run_main(monkeypatch, capsys, *argv) -> tuple[list[str], str]:
    """room.main(argv) without building pairs or starting voila: (the voila command, what it printed)."""
    ran = []
    monkeypatch.setattr(room, "prepare_room", lambda: None)
    monkeypatch.setattr(room, "_exec", ran.append)
    assert room.main(list(argv)) == 0
    return ran[0], capsys.readouterr().out


def test_on_this_machine_it_says_how_to_open_the_room_to_the_network(monkeypatch, capsys):
    command, out = run_main(monkeypatch, capsys, "--port", "9000")
    assert "--Voila.ip=127.0.0.1" in command and "--Voila.token=" in command and "--port=9000" in command
    assert "open http://127.0.0.1:9000/ on this machine; only this machine can reach it" in out
    assert "to open the room to your classroom network: bash scripts/classroom.sh --ip 0.0.0.0" in out


def test_on_a_network_it_needs_a_token_and_prints_the_links(monkeypatch, capsys):
    monkeypatch.setattr(room, "lan_addresses", lambda: ["192.168.1.20"])
    command, out = run_main(monkeypatch, capsys, "--ip", "0.0.0.0", "--max-pages", "25", "--idle-minutes", "10")
    token = next(a for a in command if a.startswith("--Voila.token=")).split("=", 1)[1]
    assert len(token) >= 8 and "--Voila.ip=0.0.0.0" in command
    assert f"students open http://192.168.1.20:8866/?token={token}" in out
    assert f"type {token} as the password" in out and "at most 25 pages at once; pages idle for 10 minutes" in out
    assert "--RoomKernelManager.max_kernels=25" in command and "--MappingKernelManager.cull_idle_timeout=600" in command

    command, out = run_main(monkeypatch, capsys, "--ip", "10.0.0.5", "--token", "otter", "--", "--theme=dark")
    assert "--Voila.token=otter" in command and command[-1] == "--theme=dark"
    assert "students open http://10.0.0.5:8866/?token=otter" in out
    command, out = run_main(monkeypatch, capsys, "--ip", "0.0.0.0", "--no-token")
    assert "--Voila.token=" in command and "WARNING: no token" in out


@pytest.mark.parametrize("argv, message", [
    (["--max-pages", "0"], "--max-pages must be at least 1, got 0"),
    (["--idle-minutes", "-1"], "--idle-minutes must be at least 0, got -1"),
    (["--token", "otter", "--no-token"], "cannot go with --no-token"),
])
def test_bad_options_are_one_clear_error(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(room, "_exec", lambda command: pytest.fail("it should not start"))
    with pytest.raises(SystemExit) as stopped:
        room.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_pairs_file_is_one_line_before_the_server_starts(monkeypatch, capsys, tmp_path):
    (tmp_path / "pairs.jsonl").write_text("not json\n")
    monkeypatch.setenv("RLHF_KIT_CLASSROOM_PAIRS", str(tmp_path / "pairs.jsonl"))
    monkeypatch.setattr(room, "_exec", lambda command: pytest.fail("it should not start"))
    assert room.main([]) == 2
    assert "classroom: error: " in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- the cap
def test_the_kernel_manager_refuses_kernels_beyond_the_cap(monkeypatch):
    """Without real kernels: the base class's start is replaced by one that takes a while, so that pages asking at
    the same moment all count against the cap."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from tornado.web import HTTPError

    async def slow_start(self, *, kernel_id=None, **kwargs):
        await asyncio.sleep(0.05)
        self._kernels[kernel_id] = object()
        return kernel_id

    monkeypatch.setattr(AsyncMappingKernelManager, "start_kernel", slow_start)

    async def scenario():
        manager = room.RoomKernelManager(max_kernels=2, cull_idle_timeout=600)
        results = await asyncio.gather(*(manager.start_kernel(kernel_name="python3") for _ in range(3)),
                                       return_exceptions=True)
        refused = [r for r in results if isinstance(r, HTTPError)]
        assert len(refused) == 1 and len(manager._kernels) == 2 and not manager._starting
        assert refused[0].status_code == 503
        assert refused[0].reason == room.room_full_message(2, 10)
        del manager._kernels[next(iter(manager._kernels))]        # a page is closed: its place is free
        assert await manager.start_kernel(kernel_name="python3") in manager._kernels

    asyncio.run(scenario())
    message = room.room_full_message(2, 10)
    assert message.startswith("The room is full: 2 pages are open") and "idle for 10 minutes" in message
    assert "tell your instructor" in message and message.isascii()


# ------------------------------------------------------------------------------------------------ Voila
class TreeMemory:
    """Samples the resident memory of a process and all its descendants every `every_s` seconds, in a thread."""

    def __init__(self, pid: int, every_s: float = 0.5):
        self.root, self.every_s = psutil.Process(pid), every_s
        self.peak_rss = self.peak_pss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def kernels(self) -> list[psutil.Process]:
        return [p for p in self.root.children(recursive=True) if "ipykernel" in " ".join(_cmdline(p))]

    def _sample(self) -> None:
        rss = pss = 0
        processes = [self.root, *self.root.children(recursive=True)]
        for p in processes:
            try:
                info = p.memory_full_info()
            except psutil.Error:                   # it ended between the listing and the reading
                continue
            rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
        if rss > self.peak_rss:
            self.peak_rss, self.peak_pss, self.peak_processes = rss, pss, len(processes)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _maps(process) -> str:
    try:
        with open(f"/proc/{process.pid}/maps") as f:
            return f.read()
    except OSError:
        return ""


def wait_for(predicate, what: str, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.5)


def student(address, log_path, token, i: int, name: str, started: float) -> Page:
    """Student i arrives (0.5 s after the one before), types their name, presses Start and clicks CLICKS times,
    waiting each time for the page to acknowledge the click (the progress moves on); the page stays open."""
    time.sleep(max(0.0, started + 0.5 * i - time.monotonic()))
    page = Page(address, log_path, token=token, timeout_s=PAGE_TIMEOUT_S)
    page.type("rk-classroom-name", name)
    page.click("rk-classroom-start")
    page.wait(lambda: page.value("rk-progress") == f"0 / {CLICKS + 1} labelled", "the collector", PAGE_TIMEOUT_S)
    for k in range(CLICKS):
        page.click(f"rk-choice-{CHOICES[(i + k) % len(CHOICES)]}")
        page.wait(lambda k=k: page.value("rk-progress") == f"{k + 1} / {CLICKS + 1} labelled", f"click {k + 1}",
                  PAGE_TIMEOUT_S)
    return page


@pytest.mark.slow
def test_thirty_students_at_once_stay_under_the_memory_ceiling_and_lose_no_click(tmp_path):
    require_voila()
    began, token = time.monotonic(), "otter"
    pairs, labels = make_pairs(CLICKS + 1), tmp_path / "labels"
    names = ["प्रिया", "Adéwálé", *(f"student-{i:02d}" for i in range(2, STUDENTS))]
    with voila_server(tmp_path, voila_env(tmp_path, pairs, labels), token=token, max_pages=STUDENTS) as (
            address, log_path, server), TreeMemory(server.pid) as memory:
        status, body, _ = get(f"http://{address}/")                         # no token: the login page, no kernel
        assert status == 200 and "password" in body.lower() and "kernelId" not in body and not memory.kernels()

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(STUDENTS) as pool:
            pages = list(pool.map(lambda i: student(address, log_path, token, i, names[i], started),
                                  range(STUDENTS)))
        kernels = memory.kernels()
        assert len(kernels) == STUDENTS
        assert not [k.pid for k in kernels if "libtorch" in _maps(k)], "a page's kernel loaded torch"

        status, body, _ = get(f"http://{address}/?token={token}")           # one page more than the cap
        assert status == 503 and f"The room is full: {STUDENTS} pages are open" in body
        assert len(memory.kernels()) == STUDENTS

        for page in pages:                                                   # the students close their tabs
            page.close()
        wait_for(lambda: not memory.kernels(), "every kernel shutting down", 60)
    seconds = time.monotonic() - began
    peak_rss_mb, peak_pss_mb = memory.peak_rss / 2**20, memory.peak_pss / 2**20
    print(f"\nclassroom load: {STUDENTS} students x {CLICKS} clicks in {seconds:.0f} s; peak memory of the server "
          f"and its kernels ({memory.peak_processes} processes): {peak_rss_mb:.0f} MB RSS, {peak_pss_mb:.0f} MB PSS "
          f"(ceiling {CEILING_MB} MB RSS); {peak_rss_mb / STUDENTS:.0f} MB RSS per page")
    assert peak_rss_mb < CEILING_MB
    assert seconds < LOAD_DEADLINE_S

    for i, name in enumerate(names):                                         # every acknowledged click is on disk
        name = clean_name(name)[0]
        got = [(d["pair_id"], d["choice"], d["annotator"]) for d in PreferenceStore(labels / f"{name}.jsonl").load()]
        assert got == [(pairs[k]["pair_id"], CHOICES[(i + k) % len(CHOICES)], name) for k in range(CLICKS)]
    assert len(list(labels.glob("*.jsonl"))) == STUDENTS


@pytest.mark.slow
def test_an_idle_page_is_culled_and_its_name_is_free_again(tmp_path):
    """A student whose browser died leaves a kernel behind (no tab was closed, so nobody shut it down): after the
    idle time the server culls it, and the name it held can be typed again without a takeover."""
    require_voila()
    pairs, labels = make_pairs(3), tmp_path / "labels"
    with voila_server(tmp_path, voila_env(tmp_path, pairs, labels), idle_seconds=5, cull_interval_s=1) as (
            address, log_path, server):
        memory = TreeMemory(server.pid)
        page = Page(address, log_path)
        page.type("rk-classroom-name", "Sam")
        page.click("rk-classroom-start")
        page.wait(lambda: page.value("rk-progress") == "0 / 3 labelled", "the collector")
        page.click("rk-choice-A")
        page.wait(lambda: page.value("rk-progress") == "1 / 3 labelled", "the click")
        page.disconnect()                                                    # the browser is gone
        assert len(memory.kernels()) == 1
        wait_for(lambda: not memory.kernels(), "the idle kernel being culled", 60)
        assert "seconds of inactivity" in log_path.read_text()          # the culler did it

        again = Page(address, log_path)
        try:
            again.type("rk-classroom-name", "sam")
            again.click("rk-classroom-start")
            again.wait(lambda: "Welcome back" in (again.value("rk-classroom-message") or ""), "Welcome back")
            again.wait(lambda: again.value("rk-progress") == "1 / 3 labelled", "1 / 3 labelled")
        finally:
            again.close()
    assert [(d["pair_id"], d["choice"]) for d in PreferenceStore(labels / "Sam.jsonl").load()] == \
        [(pairs[0]["pair_id"], "A")]
