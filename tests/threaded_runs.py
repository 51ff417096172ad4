"""Shared by the PPO and DPO playground tests: press Run, check the widget is busy and refuses a second run, wait
for the first step, press Stop, and return the stopped run."""

import time


def run_then_stop(pg, timeout: float = 120):
    pg.run_button.click()                                        # returns at once: the run trains in a thread
    assert pg.running and pg.run_button.disabled and not pg.stop_button.disabled
    assert pg.run() is None and "already going" in pg.status.value          # one run at a time
    deadline = time.monotonic() + timeout
    while not (pg.runs and pg.runs[-1].history) and time.monotonic() < deadline:
        time.sleep(0.02)
    pg.stop_button.click()
    assert pg.wait(timeout=timeout)
    run = pg.runs[-1]
    assert run.status == "stopped" and not pg.running and not pg.run_button.disabled and pg.stop_button.disabled
    return run
