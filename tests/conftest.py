import pytest

from rlhf_kit.presets import get_preset
from rlhf_kit.workspace import Workspace


@pytest.fixture(scope="session")
def micro_preset():
    """The `micro` preset: smaller than `ci`, so unit tests that need real artefacts build them in seconds. Its
    workspace is `<home>/micro-seed0`, so the command line reaches it with `--preset micro`."""
    return get_preset("micro")


@pytest.fixture(scope="session")
def micro_ws(tmp_path_factory, micro_preset):
    """A workspace with world, base and sft built at micro size, shared by the tests that only read it."""
    ws = Workspace(micro_preset, home=tmp_path_factory.mktemp("ws"), seed=0)
    ws.ensure("sft")
    return ws


@pytest.fixture(scope="session")
def micro_rm_ws(micro_ws):
    """`micro_ws` with the preferences and reward stages built too."""
    micro_ws.ensure("reward")
    return micro_ws


# ------------------------------------------------------------------------------------- measurements
MEASURED: list[str] = []    # lines a test measured (e.g. the playground's latency), printed after the run


@pytest.fixture
def measured():
    """`measured(line)` keeps a measurement to print in the run's summary, where a timed figure belongs (a
    timed assertion would fail on a slow machine; the figure is for the reader of the run)."""
    return MEASURED.append


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("measured")
        for line in MEASURED:
            terminalreporter.write_line(line)
