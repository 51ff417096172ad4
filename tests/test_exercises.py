"""Each checker accepts the reference and rejects typical wrong implementations with the hint for that mistake.

The wrong implementations here are written independently of the checker's own catalogue, the way a learner
would write them, so a test fails if the test vectors stop telling a mistake apart.
"""

import signal
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from exercise_contract import contract

from rlhf_kit import losses
from rlhf_kit.exercises import EXERCISES, check, verify


def test_reference_passes():
    ok, message = verify("sft_loss", losses.sft_loss)
    assert ok, message
    assert "passed" in message


def test_alternative_correct_implementation_passes():
    """A loop-based but correct version is accepted: the checker compares values, not code."""
    def loop_sft_loss(logits, input_ids, response_mask):
        total, count = 0.0, 0
        for b in range(logits.shape[0]):
            for t in range(1, logits.shape[1]):
                if response_mask[b, t]:
                    total = total - torch.log_softmax(logits[b, t - 1], -1)[input_ids[b, t]]
                    count += 1
        return total / count

    ok, message = verify("sft_loss", loop_sft_loss)
    assert ok, message


def _nll(logits, input_ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1),
                           reduction="none").view(input_ids.shape[0], -1)


WRONG = {
    "Did you shift": lambda logits, input_ids, response_mask: (
        F.cross_entropy(logits.flatten(0, 1), input_ids.flatten(), reduction="none").view(input_ids.shape)
        * response_mask).sum() / response_mask.sum(),
    "includes prompt and padding": lambda logits, input_ids, response_mask: F.cross_entropy(
        logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten()),
    "not shifted with the targets": lambda logits, input_ids, response_mask: (
        (_nll(logits, input_ids) * response_mask[:, :-1]).sum() / response_mask[:, :-1].sum()),
    "You summed": lambda logits, input_ids, response_mask: (_nll(logits, input_ids) * response_mask[:, 1:]).sum(),
    "divided by every position": lambda logits, input_ids, response_mask: (
        _nll(logits, input_ids) * response_mask[:, 1:]).mean(),
    "within each sequence": lambda logits, input_ids, response_mask: torch.stack([
        _nll(logits, input_ids)[b][response_mask[b, 1:].bool()].mean() for b in range(len(logits))]).mean(),
    "Wrong sign": lambda logits, input_ids, response_mask: (
        -(_nll(logits, input_ids) * response_mask[:, 1:]).sum() / response_mask[:, 1:].sum()),
}


@pytest.mark.parametrize("hint", list(WRONG))
def test_typical_mistakes_are_named(hint):
    ok, message = verify("sft_loss", WRONG[hint])
    assert not ok
    assert hint in message, message


def test_catalogue_hints_are_all_covered():
    """Every hint in the checker's catalogue is exercised by an independent wrong implementation above."""
    hints = [m.hint for m in EXERCISES["sft_loss"].mistakes]
    assert all(any(key in h for key in WRONG) for h in hints)


def test_unimplemented_exception_and_shape_errors():
    def stub(logits, input_ids, response_mask):
        raise NotImplementedError

    def crashes(logits, input_ids, response_mask):
        return logits[999]

    def per_token(logits, input_ids, response_mask):
        return _nll(logits, input_ids)

    assert verify("sft_loss", stub) == (False, "sft_loss is not implemented yet.")
    ok, message = verify("sft_loss", crashes)
    assert not ok and "IndexError" in message
    ok, message = verify("sft_loss", per_token)
    assert not ok and "0-dim" in message
    ok, message = verify("sft_loss", lambda logits, input_ids, response_mask: 1.0)
    assert not ok and "torch tensor" in message


def test_unknown_exercise():
    with pytest.raises(KeyError, match="Known exercises"):
        verify("no_such_exercise", losses.sft_loss)


def test_check_returns_own_function_or_reference(capsys):
    assert check("sft_loss", losses.sft_loss) is losses.sft_loss
    assert "✅" in capsys.readouterr().out

    def stub(logits, input_ids, response_mask):
        raise NotImplementedError

    assert check("sft_loss", stub) is EXERCISES["sft_loss"].reference
    out = capsys.readouterr().out
    assert "not implemented" in out and "Using the reference implementation" in out


def test_a_function_that_changes_its_input_in_place_fails_naming_it():
    """The result is right, but the caller's logits are gone: that is the learner's mistake to hear about."""
    def in_place(logits, input_ids, response_mask):
        result = losses.sft_loss(logits, input_ids, response_mask)
        logits.zero_()
        return result

    ok, message = verify("sft_loss", in_place)
    assert not ok
    assert message.startswith("sft_loss is wrong on test case 1 (")
    assert "your function changed its input `logits` in place" in message and "logits.clone()" in message


def test_the_cases_survive_a_function_that_changes_its_inputs():
    """Cases are built once, at import: an in-place change reaches only the learner's own copy."""
    logits = [case.kwargs["logits"].clone() for case in EXERCISES["sft_loss"].cases]

    def zeroes_everything(logits, input_ids, response_mask):
        logits.zero_()
        response_mask.zero_()
        return torch.tensor(0.0)

    for _ in range(2):
        assert not verify("sft_loss", zeroes_everything)[0]
    assert all(torch.equal(a, case.kwargs["logits"]) for a, case in zip(logits, EXERCISES["sft_loss"].cases))
    assert verify("sft_loss", losses.sft_loss)[0]


@pytest.mark.parametrize("name", ["sft_loss", "ranking_to_pairs"])
def test_the_learner_and_the_reference_never_share_an_input(monkeypatch, name):
    """Tensors and lists alike: each call gets its own deep copy (lists used to be handed to both as they were)."""
    seen = {"learner": [], "reference": []}

    def spy(who, fn):
        def wrapped(**kwargs):
            seen[who].append(kwargs)
            return fn(**kwargs)
        return wrapped

    right = EXERCISES[name].reference
    monkeypatch.setattr(EXERCISES[name], "reference", spy("reference", right))
    assert verify(name, spy("learner", right))[0]
    assert len(seen["learner"]) == len(seen["reference"]) == len(EXERCISES[name].cases)
    for mine, theirs in zip(seen["learner"], seen["reference"]):
        assert all(mine[k] is not theirs[k] for k in mine if isinstance(mine[k], (torch.Tensor, list)))


def test_an_endless_loop_is_stopped_after_the_time_limit():
    start = time.monotonic()

    def forever(logits, input_ids, response_mask):
        while time.monotonic() < start + 60:   # "forever", with a backstop in case the checker is broken
            try:
                pass
            except Exception:   # noqa: BLE001 - a learner's catch-all does not swallow the time limit
                pass

    ok, message = verify("sft_loss", forever, time_limit=0.3)
    assert not ok and time.monotonic() - start < 5
    assert message.startswith("sft_loss took longer than 0.3 s on test case 1 (") and "It was stopped." in message
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)   # the alarm is put back as it was
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


def test_the_time_limit_holds_off_the_main_thread_too():
    """Off the main thread there is no SIGALRM: the call runs in a thread that is given up on (and says so)."""
    stop = threading.Event()

    def slow(logits, input_ids, response_mask):
        stop.wait(30)   # an endless loop that this test can end
        return losses.sft_loss(logits, input_ids, response_mask)

    result = []
    caller = threading.Thread(target=lambda: result.append(verify("sft_loss", slow, time_limit=0.3)))
    caller.start()
    caller.join(10)
    stop.set()
    assert result, "verify did not return"
    ok, message = result[0]
    assert not ok and "took longer than 0.3 s" in message and "still running in the background" in message


def test_a_slow_property_check_is_stopped_too():
    def hangs_on_bad_margin(r_chosen, r_rejected, margin=None):
        loss = losses.bradley_terry_loss(r_chosen, r_rejected, margin)
        start = time.monotonic()
        while r_chosen.requires_grad and time.monotonic() < start + 60:   # only the gradient check passes
            pass                                                           # tensors that require grad
        return loss

    ok, message = verify("bradley_terry_loss", hangs_on_bad_margin, time_limit=0.3)
    assert not ok and message.startswith("bradley_terry_loss took longer than 0.3 s on a property check")


def test_time_limit_must_be_positive():
    with pytest.raises(ValueError, match="time_limit must be a positive number of seconds"):
        verify("sft_loss", losses.sft_loss, time_limit=0)


def test_summary_counts_what_check_kept(capsys):
    from rlhf_kit.exercises import OUTCOMES, summary
    OUTCOMES.clear()
    check("sft_loss", losses.sft_loss)
    check("bradley_terry_loss", lambda **kwargs: (_ for _ in ()).throw(NotImplementedError))
    capsys.readouterr()
    assert summary("sft_loss", "bradley_terry_loss", "gae") == (1, 3)
    out = capsys.readouterr().out
    assert "Exercises passed: 1/3" in out
    assert "reference instead of yours: bradley_terry_loss" in out and "Not checked in this session: gae" in out
    with pytest.raises(KeyError, match="No exercise called"):
        summary("sft_los")
    OUTCOMES.clear()


# ------------------------------------------------------------------------------------------------ build_response_mask
def mask_loop(prompt_lengths, attention_mask):
    """Row by row: ones from the end of the prompt to the last real token (the eos), zeros elsewhere."""
    mask = torch.zeros_like(attention_mask)
    for b, p in enumerate(prompt_lengths.tolist()):
        mask[b, p : int(attention_mask[b].sum())] = 1
    return mask


def mask_cumsum(prompt_lengths, attention_mask):
    """Counting real tokens: a token is in the response when more than prompt_lengths of them reach it."""
    return ((attention_mask.cumsum(1) > prompt_lengths[:, None]) & (attention_mask == 1)).int()


def mask_no_eos(prompt_lengths, attention_mask):
    mask = mask_loop(prompt_lengths, attention_mask)
    for b in range(len(mask)):
        mask[b, int(attention_mask[b].sum()) - 1] = 0
    return mask


def mask_is_attention(prompt_lengths, attention_mask):
    return attention_mask.clone()


def mask_with_padding(prompt_lengths, attention_mask):
    return (torch.arange(attention_mask.shape[1]) >= prompt_lengths[:, None]).long()


def mask_starts_late(prompt_lengths, attention_mask):
    return (torch.arange(attention_mask.shape[1]) > prompt_lengths[:, None]).long() * attention_mask


def mask_starts_early(prompt_lengths, attention_mask):
    return (torch.arange(attention_mask.shape[1]) >= prompt_lengths[:, None] - 1).long() * attention_mask


def mask_shifted(prompt_lengths, attention_mask):
    return mask_loop(prompt_lengths, attention_mask)[:, 1:]


MASK_WRONG = {
    "The eos is left out": mask_no_eos,
    "The prompt is included": mask_is_attention,
    "The padding is included": mask_with_padding,
    "not >": mask_starts_late,
    "the last prompt token": mask_starts_early,
    "The mask is shifted": mask_shifted,
}


(test_response_mask_reference_passes, test_response_mask_independent_versions_pass,
 test_response_mask_mistakes_are_named, test_response_mask_catalogue_is_covered,
 test_response_mask_stub) = contract(["build_response_mask"],
                                     [("build_response_mask", fn, hint) for hint, fn in MASK_WRONG.items()],
                                     [("build_response_mask", mask_loop), ("build_response_mask", mask_cumsum)])


def test_the_reference_mask_matches_the_trainers_mask():
    from rlhf_kit.sft import collate
    examples = [([5, 6, 7, 8, 9], [0, 0, 1, 1, 1]), ([5, 6, 7], [0, 1, 1]),
                ([1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 1, 1, 1])]
    batch = collate(examples, pad_id=0)
    mine = losses.build_response_mask(torch.tensor([2, 1, 4]), batch["attention_mask"])
    assert torch.equal(mine, batch["response_mask"])
