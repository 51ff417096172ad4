"""The course's widgets in a real browser: JupyterLab runs a notebook with "Run All" and headless Chromium (driven by
Playwright) uses the rendered widgets.

- Lab 02's preference collector: the store file on disk must hold exactly the clicks.
- Lab 04's PPO playground: moving the beta and steps sliders and pressing Run must start a real run with those
  settings, reported by the kernel; Stop must end a long run early.
- Lab 05 must run to the end and show its plots.

Needs Debian's chromium and the playwright package: `bash scripts/install_browser.sh` (`make test` runs it). Without
them the test is skipped with that reason, unless $CI is set: then it fails, so CI cannot pass without clicking.
"""

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from servers import free_port, in_ci, kill_processes_with  # tests/servers.py

from rlhf_kit.preferences import PreferenceStore
from rlhf_kit.workspace import default_home

REPO = Path(__file__).resolve().parents[1]
LAB_02 = REPO / "labs" / "02_collecting_preferences.ipynb"
FIXTURE = REPO / "tests" / "browser_fixture.ipynb"
# The notebook clicked: lab 02 once it exists, else the small fixture. Either must read its store path from
# $RLHF_KIT_BROWSER_STORE, start with that store empty, and display a PreferenceCollector of >= 4 pairs.
NOTEBOOK = LAB_02 if LAB_02.exists() else FIXTURE
LAB_04 = REPO / "labs" / "04_ppo.ipynb"
LAB_05 = REPO / "labs" / "05_reward_hacking.ipynb"
SCREENSHOT = REPO / "test-artifacts" / "collector.png"
PLAYGROUND_SCREENSHOT = SCREENSHOT.with_name("playground.png")
FAILURE_SCREENSHOT = "browser-failure-{stem}.png"      # per notebook, in SCREENSHOT's folder
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]
ANNOTATOR = "browser-test"
CLICKS = ("A", "B", "tie", "A")                        # then "Undo last" takes back the last A
START_TIMEOUT_S = 120                                  # server start, page load, kernel start
RUN_TIMEOUT_S = 8 * 60                                 # Run All to the last cell: in make test the notebooks
                                                       # have built the ci workspace (these tests run last); run
                                                       # alone, lab 02 builds it (world, base, sft, preferences),
                                                       # 2-3 min; lab 04 trains two 20-step PPO runs, about 1 min
CLICK_TIMEOUT_MS = 60_000                              # each click's round trip to the kernel and the view


def require_browser():
    """Skip (fail under $CI) unless Chromium and Playwright are installed."""
    missing = [] if Path(CHROMIUM).is_file() else [f"{CHROMIUM} (Debian package chromium)"]
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright")
    if missing:
        reason = (f"the browser test needs {' and '.join(missing)}: run `bash scripts/install_browser.sh` "
                  f"(`make test` runs it)")
        if in_ci():
            pytest.fail(f"{reason}. $CI is set, so this is a failure, not a skip.", pytrace=False)
        pytest.skip(reason)


@contextmanager
def jupyterlab(root: Path, env: dict):
    """A JupyterLab server on 127.0.0.1 serving `root`; yields its URL, token and log file; stopped (with its
    kernels) after."""
    port, token, state = free_port(), secrets.token_hex(16), root.parent / "jupyter"
    marker = f"RLHF_KIT_BROWSER_TEST={token}"
    env = {**os.environ, **env, "RLHF_KIT_BROWSER_TEST": token, "JUPYTER_CONFIG_DIR": str(state / "config"),
           "JUPYTER_DATA_DIR": str(state / "data"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "IPYTHONDIR": str(state / "ipython")}
    # Attach every cell to the page, so the widget is in the DOM wherever it is in the notebook.
    tracker = state / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    log_path = state / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.terminals_enabled=False", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.workspaces_dir={state / 'workspaces'}", f"--LabApp.user_settings_dir={state / 'settings'}"]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer on {url} within {START_TIMEOUT_S} s:\n"
                                       f"{log_path.read_text()[-3000:]}") from None
                time.sleep(0.3)
        yield url, token, log_path
    finally:
        server.send_signal(signal.SIGTERM)                     # the server shuts its kernels down
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        kill_processes_with(marker.encode())


# The open notebook's progress under Run All, read from JupyterLab's models (window.jupyterapp).
RUN_STATE_JS = """() => {
    const nb = window.jupyterapp.shell.currentWidget;
    const cells = nb.content.widgets.map(c => c.model)
        .filter(m => m.type === 'code' && m.sharedModel.getSource().trim() !== '');
    const errors = [];
    cells.forEach((m, i) => {
        if ((m.getMetadata('tags') || []).includes('raises-exception')) return;
        for (let j = 0; j < m.outputs.length; j++) {
            const out = m.outputs.get(j).toJSON();
            if (out.output_type === 'error') errors.push({cell: i + 1, ...out});
        }
    });
    const left = cells.filter(m => m.executionCount === null || m.executionState === 'running').length;
    return {kernel: nb.sessionContext.session?.kernel?.status ?? 'none', cells: cells.length, left, errors};
}"""


def run_all_cells(page, name: str) -> None:
    """Once the open notebook (called `name`) has its kernel, Run > Run All Cells, and wait until every code cell
    has run. A cell's error or a dead kernel fails at once, with the traceback."""
    page.wait_for_function("""() => {
        const nb = window.jupyterapp?.shell?.currentWidget;
        return nb?.context?.isReady && nb?.sessionContext?.isReady && nb?.sessionContext?.session?.kernel;
    }""", timeout=START_TIMEOUT_S * 1000)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")   # not awaited
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        state = page.evaluate(RUN_STATE_JS)
        if state["errors"]:
            e = state["errors"][0]
            traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(e.get("traceback", [])))
            raise AssertionError(f"{name}: code cell {e['cell']} raised {e['ename']}: {e['evalue']}\n"
                                 f"{traceback[-4000:]}")
        if state["kernel"] == "dead":
            raise AssertionError(f"{name}: the kernel is {state['kernel']} with {state['left']} of "
                                 f"{state['cells']} code cells left to run")
        if state["left"] == 0 and state["kernel"] == "idle":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: {state['left']} of {state['cells']} code cells still not run "
                                 f"after {RUN_TIMEOUT_S} s (kernel {state['kernel']})")
        page.wait_for_timeout(1000)


def click_through(collector, expect) -> None:
    """Type the annotator's name, click CLICKS and then "Undo last", checking the view after each click."""
    progress = collector.locator(".rk-progress")

    def labelled(n):
        expect(progress).to_have_text(re.compile(rf"^{n} / \d+ labelled$"))

    def pair_on_screen():
        return [collector.locator(css).inner_text() for css in (".rk-prompt", ".rk-response-a", ".rk-response-b")]

    name = collector.locator(".rk-annotator input")
    if not name.input_value():
        expect(collector.locator(".rk-choice-A")).to_be_disabled()      # no name yet
    name.fill(ANNOTATOR)
    labelled(0)
    for n, choice in enumerate(CLICKS, start=1):
        last_pair = pair_on_screen()
        collector.locator(f".rk-choice-{choice}").click()               # waits until the button is enabled
        labelled(n)
    collector.locator(".rk-undo").click()
    labelled(len(CLICKS) - 1)
    assert pair_on_screen() == last_pair, "after Undo the widget should show the undone pair again"


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@contextmanager
def notebook_page(tmp_path: Path, notebook: Path, env: dict | None = None):
    """JupyterLab on a copy of `notebook` in the `ci` preset, opened in Chromium and run with Run All; yields the
    page. On an error: a full-page screenshot (FAILURE_SCREENSHOT) and the server log's tail."""
    failure = SCREENSHOT.with_name(FAILURE_SCREENSHOT.format(stem=notebook.stem))
    from playwright.sync_api import expect, sync_playwright

    root = tmp_path / "notebooks"                  # a copy, so autosave never writes outputs into the repository
    root.mkdir()
    (root / notebook.name).write_bytes(notebook.read_bytes())
    env = {"RLHF_KIT_PRESET": "ci", "RLHF_KIT_HOME": str(default_home()), "HF_HUB_OFFLINE": "1", **(env or {})}
    expect.set_options(timeout=CLICK_TIMEOUT_MS)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    failure.unlink(missing_ok=True)
    with jupyterlab(root, env) as (url, token, log_path), sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            tmp_path / "chromium-profile", executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1400})
        page = browser.pages[0]
        page.set_default_timeout(START_TIMEOUT_S * 1000)
        try:
            page.goto(f"{url}/lab/tree/{notebook.name}?token={token}")
            run_all_cells(page, notebook.name)
            yield page
        except BaseException:
            page.screenshot(path=failure, full_page=True)
            print(f"--- JupyterLab log, last lines ---\n{log_path.read_text()[-3000:]}")
            raise
        finally:
            browser.close()


@pytest.mark.slow
def test_clicks_in_jupyterlab_land_in_the_store(tmp_path):
    require_browser()
    from playwright.sync_api import expect

    store_path = tmp_path / "labels.jsonl"
    SCREENSHOT.unlink(missing_ok=True)
    with notebook_page(tmp_path, NOTEBOOK, {"RLHF_KIT_BROWSER_STORE": str(store_path)}) as page:
        before = read_events(store_path)
        assert not [e for e in before if e.get("annotator") == ANNOTATOR], "the store should start empty"
        collector = page.locator(".rk-collector").first
        expect(collector, f"{NOTEBOOK.name} ran to the end but shows no PreferenceCollector").to_be_attached()
        collector.scroll_into_view_if_needed()
        expect(collector).to_be_visible()
        click_through(collector, expect)
        expect(collector.locator(".rk-panel")).to_contain_text("73%")
        collector.screenshot(path=SCREENSHOT)

    events = read_events(store_path)
    assert events[:len(before)] == before
    clicked = events[len(before):]                                  # what the clicks appended, and nothing else
    assert [(e["kind"], e.get("choice"), e["annotator"]) for e in clicked] == \
        [("decision", c, ANNOTATOR) for c in CLICKS] + [("undo", None, ANNOTATOR)]
    assert clicked[-1]["pair_id"] == clicked[-2]["pair_id"]         # the undo took back the last click
    decisions = [d for d in PreferenceStore(store_path).load() if d["annotator"] == ANNOTATOR]
    assert [d["choice"] for d in decisions] == list(CLICKS[:-1])
    assert len({d["pair_id"] for d in decisions}) == len(decisions)


def slide_to(slider, *keys: str) -> None:
    """Move an ipywidgets slider with its keyboard handle (noUiSlider: Home, End, ArrowLeft, ArrowRight)."""
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    for key in keys:
        handle.press(key)


@pytest.mark.slow
@pytest.mark.skipif(not LAB_04.exists(), reason="lab 04 is not generated")
def test_the_playground_sliders_drive_a_real_run_in_jupyterlab(tmp_path, measured):
    require_browser()
    from playwright.sync_api import expect

    PLAYGROUND_SCREENSHOT.unlink(missing_ok=True)
    with notebook_page(tmp_path, LAB_04) as page:
        playground = page.locator(".rk-playground").first
        expect(playground, f"{LAB_04.name} ran to the end but shows no Playground").to_be_attached()
        playground.scroll_into_view_if_needed()
        status, dashboard = playground.locator(".rk-status"), playground.locator(".rk-dashboard")
        runs_so_far = 2                                         # the notebook's own two runs (run_sync)
        expect(status).to_contain_text(f"Run #{runs_so_far} ")

        # beta to its first stop, exactly 0; steps to 1 and one notch up, 2. The kernel reports the run it made.
        slide_to(playground.locator(".rk-beta"), "Home")
        slide_to(playground.locator(".rk-steps"), "Home", "ArrowRight")
        expect(playground.locator(".rk-beta .widget-readout")).to_have_text("0")
        expect(playground.locator(".rk-steps .widget-readout")).to_have_text("2")
        picture = dashboard.get_attribute("src")
        pressed = time.perf_counter()
        playground.locator(".rk-run").click()
        page.wait_for_function("([element, before]) => element.getAttribute('src') !== before",
                               arg=[dashboard.element_handle(), picture], timeout=RUN_TIMEOUT_S * 1000)
        in_browser = time.perf_counter() - pressed                 # click to the first redrawn dashboard
        expect(status).to_contain_text(re.compile(rf"Run #{runs_so_far + 1} beta=0 eps=\S+ lr=\S+.* finished after "
                                                  r"2 of 2 steps"), timeout=RUN_TIMEOUT_S * 1000)
        in_kernel = float(re.search(r"first curve ([\d.]+) s after Run", status.inner_text()).group(1))
        measured(f"playground ({os.environ.get('RLHF_KIT_PRESET', 'lab')}): first redrawn curve {in_browser:.1f} s "
                 f"after clicking Run in the browser ({in_kernel:.1f} s of it in the kernel)")
        expect(playground.locator(".rk-run")).to_be_enabled()
        playground.screenshot(path=PLAYGROUND_SCREENSHOT)

        # A long run, stopped after its first step: it ends early and says so.
        slide_to(playground.locator(".rk-steps"), "End")
        playground.locator(".rk-run").click()
        expect(status).to_contain_text(re.compile(rf"Run #{runs_so_far + 2} .*step 1/"), timeout=RUN_TIMEOUT_S * 1000)
        playground.locator(".rk-stop").click()
        stopped = re.compile(rf"Run #{runs_so_far + 2} .* stopped after (\d+) of (\d+) steps")
        expect(status).to_contain_text(stopped, timeout=RUN_TIMEOUT_S * 1000)
        done, planned = map(int, stopped.search(status.inner_text()).groups())
        assert done < planned, f"Stop should end the run early; it ran {done} of {planned} steps"


@pytest.mark.slow
@pytest.mark.skipif(not LAB_05.exists(), reason="lab 05 is not generated")
def test_lab_05_runs_to_the_end_in_jupyterlab_with_its_plots(tmp_path):
    require_browser()
    from playwright.sync_api import expect

    with notebook_page(tmp_path, LAB_05) as page:              # Run All fails on any cell's error
        outputs = page.locator(".jp-OutputArea-output")
        expect(outputs.locator("img[src^='data:image/png']")).to_have_count(1)   # the over-optimisation plot
        expect(outputs.filter(has_text="gave up most:")).to_have_count(1)
        expect(page.locator(".jp-OutputArea-output table").first).to_be_attached()


def test_a_missing_browser_skips_here_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    for ci, outcome in (("", pytest.skip.Exception), ("false", pytest.skip.Exception),
                        ("true", pytest.fail.Exception), ("1", pytest.fail.Exception)):
        monkeypatch.setenv("CI", ci)
        with pytest.raises(outcome, match=r"/nonexistent/chromium.*`bash scripts/install_browser\.sh`"):
            require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_browser()
