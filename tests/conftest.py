import pytest

from rlhf_kit.presets import get_preset
from rlhf_kit.workspace import Workspace

# A preset smaller than `ci`, so unit tests that need real artefacts build them in seconds.
MICRO = dict(n_corpus_docs=120, n_demos=60, n_heldout=6, vocab_size=320, n_layer=1, n_head=2, n_embd=32,
             n_positions=128, pretrain_steps=4, pretrain_batch_size=4, sft_steps=3, sft_batch_size=4,
             max_new_tokens=16, n_pref_prompts=6, pref_k=3, rm_steps=3, rm_batch_size=4)


@pytest.fixture(scope="session")
def micro_preset():
    return get_preset("ci", **MICRO)


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
