"""The checking machinery: run a learner's function on each test vector, compare with the reference, name the
mistake; plus the helpers the topic modules build their test vectors with.

Every call gets its own deep copy of the test vector, so no function sees what another changed; a function that
changes one of its inputs in place fails, naming the argument; each call of the learner's function may take
`TIME_LIMIT` seconds, so an endless loop gets a message instead of a hung notebook.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class Case:
    """One test vector. Built once; every call gets its own deep copy of `kwargs`."""
    kwargs: dict                    # the keyword arguments of the exercise's function
    what: str                       # describes it in messages: "test case 2 (<what>)"
    expected: object = None         # a fixed value (e.g. from a worked example) that the compared output must
    #                                 equal, instead of the reference's


@dataclass
class Mistake:
    hint: str                       # what the learner is told
    impl: Callable | None = None    # a model of the wrong implementation, same signature as the reference
    # Or/and a rule: detect(case, got) -> True when the learner's (wrong) output on this case shows the mistake,
    # for mistakes with many spellings (e.g. any mismatch on a huge-margin case is an instability).
    detect: Callable[[Case, object], bool] | None = None


@dataclass
class Exercise:
    reference: Callable
    cases: list[Case]
    mistakes: list[Mistake] = field(default_factory=list)
    scalar: bool = False             # the (compared) output must be a 0-dim tensor
    atol: float = 1e-5
    outputs: tuple[str, ...] = ()    # names of the parts when the function returns a tuple, e.g. ("loss", "stats")
    compare: Callable | None = None  # picks the part of the output compared with the reference (default: all)
    # extra(got, expected) -> None or what is wrong with the rest of the output, checked once the compared part
    # matches (e.g. the stats dict next to PPO's loss); `expected` is the reference's full output.
    extra: Callable[[object, object], str | None] | None = None
    # property checks run after every case passes: check(fn) -> None or what is wrong (a gradient, an error)
    properties: list[Callable[[Callable], str | None]] = field(default_factory=list)
    # for exercises whose output is not tensors: same(expected, got) -> bool (default: allclose on tensors), and
    # mismatch(expected, got) -> what differs, for the message when no mistake in the catalogue matches
    same: Callable[[object, object], bool] | None = None
    mismatch: Callable[[object, object], str] | None = None


def close(a, b, atol: float) -> bool:
    """`b` matches `a`: same shape and values within atol (rtol 1e-4), tuples and lists part by part."""
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(close(x, y, atol) for x, y in zip(a, b))
    if not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    return bool(torch.allclose(a.double(), b.detach().double(), atol=atol, rtol=1e-4, equal_nan=False))


def _inputs(case: Case) -> dict:
    """A fresh deep copy of the case's arguments: every call, the learner's, the reference's and each mistake
    model's, gets its own, so none of them sees what another changed (nor changes the case)."""
    return copy.deepcopy(case.kwargs)


# ------------------------------------------------------------------------------------------------ test-vector helpers
def randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def right_mask(lengths, seq_len):
    """(batch, seq_len) 0/1 mask, 1 on the first `lengths[b]` positions of each row (right padding)."""
    return (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()


def left_mask(lengths, seq_len):
    """(batch, seq_len) 0/1 mask, 1 on the last `lengths[b]` positions of each row (left padding)."""
    return (torch.arange(seq_len)[None, :] >= seq_len - torch.tensor(lengths)[:, None]).long()


def must_reject(kwargs: dict, what: str, why: str) -> Callable[[Callable], str | None]:
    """A property check: `fn(**kwargs)` (a fresh copy each time) must raise ValueError. `what` names the bad
    argument, `why` says why it is bad."""
    def prop(fn: Callable) -> str | None:
        try:
            fn(**copy.deepcopy(kwargs))
        except ValueError:
            return None
        except NotImplementedError:
            return f"it does not reject {what}: raise ValueError ({why})."
        except Exception as error:  # noqa: BLE001
            return f"for {what} it raised {type(error).__name__} ({error}); raise ValueError instead ({why})."
        return f"it does not reject {what}: raise ValueError ({why})."
    return prop


# ------------------------------------------------------------------------------ in-place changes, time limit
def _same_value(a, b) -> bool:
    """Exactly equal, tensors included (same shape, dtype and values; NaN equals NaN), containers recursively."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        equal = a == b
        if a.is_floating_point() or a.is_complex():
            equal |= a.isnan() & b.isnan()
        return bool(equal.all())
    if isinstance(a, torch.Generator):   # drawing from a generator is what it is for; re-seeding it is a change
        return isinstance(b, torch.Generator) and a.initial_seed() == b.initial_seed()
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same_value(x, y) for x, y in zip(a, b)))
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(_same_value(a[k], b[k]) for k in a))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - something that cannot even be compared has changed
        return False


def _changed_input(given: dict, case: Case) -> str | None:
    """The name of the first argument the learner's function changed in place (compared with the case), or
    None."""
    for name, before in case.kwargs.items():
        if not _same_value(before, given[name]):
            return name
    return None


def _in_place_message(name: str, where: str, arg: str, value) -> str:
    if isinstance(value, torch.Generator):
        fix = f"draw from `{arg}` as it is, without re-seeding it: the caller chose its seed"
    elif isinstance(value, torch.Tensor):
        fix = (f"build new tensors instead (x = x * mask, not x *= mask, x.zero_() or x[...] = ...), or start "
               f"from a copy, {arg} = {arg}.clone()")
    else:
        fix = (f"work on a copy instead (sorted({arg}), {arg}[::-1] or list({arg}), not {arg}.sort(), "
               f"{arg}.reverse() or {arg}.pop())")
    return (f"{name} is wrong on {where}: your function changed its input `{arg}` in place; the code that calls "
            f"it still uses `{arg}` afterwards, so that is a bug even when the result is right: {fix}.")


# --------------------------------------------------------------------------------------------- the time limit
TIME_LIMIT = 10.0   # seconds one call of a learner's function may take in `verify` (the test vectors are tiny)


class _TooSlow(BaseException):
    """Raised into a learner's function whose time is up. A BaseException, so that an `except Exception` in
    the learner's loop cannot swallow it (a bare `except:` still can)."""

    def __init__(self, still_running: bool):
        super().__init__("time limit")
        self.still_running = still_running


def _raise_too_slow(signum, frame):
    raise _TooSlow(still_running=False)


def _can_use_alarm() -> bool:
    """SIGALRM is ours to use: POSIX, the main thread, and no one else's timer or handler in place."""
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
            and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None))


def _call(fn: Callable, limit: float, *args, **kwargs):
    """fn(*args, **kwargs), or _TooSlow once it has run `limit` seconds.

    Where `_can_use_alarm` (a notebook kernel or pytest on Linux/macOS), a SIGALRM timer raises _TooSlow inside
    the function, which really stops it (between Python operations: one long torch call finishes first).
    Elsewhere (Windows, a call from another thread, someone else's alarm armed) the function runs in a daemon
    thread that is abandoned after `limit` seconds: Python cannot kill a thread, so an endless loop then keeps
    running in the background until the kernel restarts, and the message says so.
    """
    if _can_use_alarm():
        previous = signal.signal(signal.SIGALRM, _raise_too_slow)
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                return fn(*args, **kwargs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous)
    outcome = {}

    def run():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed back to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"rlhf_kit verify {getattr(fn, '__name__', 'fn')}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise _TooSlow(still_running=True)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _too_slow_message(name: str, where: str, limit: float, slow: _TooSlow) -> str:
    after = ("It is still running in the background (Python cannot stop a thread): restart the kernel once "
             "you have fixed it." if slow.still_running else "It was stopped.")
    return (f"{name} took longer than {limit:g} s on {where}, where the reference takes milliseconds: is there "
            f"a loop that never ends (a while whose condition never changes, a loop over a list it appends "
            f"to)? {after}")


def verify(name: str, exercise: Exercise, fn: Callable, time_limit: float) -> tuple[bool, str]:
    """Check `fn` against the reference of `exercise` (called `name` in messages) on every test vector.

    Returns (True, summary) when every case matches, else (False, message naming the likely mistake).
    Each call gets its own deep copy of the inputs (the reference and each mistake model theirs); a function
    that changes an input in place fails, naming the argument, even when its result is right. Each call of
    `fn` may take `time_limit` seconds (see `_call` for how it is stopped).
    """
    if not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    for number, case in enumerate(exercise.cases, start=1):
        problem = _check_case(name, exercise, fn, case, f"test case {number} ({case.what})", time_limit)
        if problem:
            return False, problem
    problem = _check_properties(name, exercise, fn, time_limit)
    if problem:
        return False, problem
    return True, f"{name} passed all {len(exercise.cases) + len(exercise.properties)} checks."


def _check_case(name: str, exercise: Exercise, fn: Callable, case: Case, where: str,
                time_limit: float) -> str | None:
    """What is wrong with `fn` on one test vector (`where` names it), or None."""
    given = _inputs(case)
    try:
        got = _call(fn, time_limit, **given)
    except NotImplementedError:
        return f"{name} is not implemented yet."
    except _TooSlow as slow:
        return _too_slow_message(name, where, time_limit, slow)
    except Exception as error:  # the learner's code may fail in any way; report it, do not crash the lab
        return f"{name} raised {type(error).__name__}: {error} on {where}."
    changed = _changed_input(given, case)
    if changed:
        return _in_place_message(name, where, changed, given[changed])
    full_expected = exercise.reference(**_inputs(case))
    problem = _form_problem(name, exercise, got, where)
    if problem:
        return problem
    compared = _compared(exercise, got)
    expected = _compared(exercise, full_expected) if case.expected is None else case.expected
    if _matches(exercise, expected, compared):
        problem = exercise.extra(got, full_expected) if exercise.extra else None
        return f"{name} is wrong on {where}: {problem}" if problem else None
    for mistake in exercise.mistakes:
        if _shows(mistake, exercise, case, compared):
            return f"{name} is wrong on {where}. {mistake.hint}"
    return f"{name} is wrong on {where}: {_mismatch(expected, compared, exercise)}."


def _form_problem(name: str, exercise: Exercise, got, where: str) -> str | None:
    """What is wrong with the form of the output (a tuple of the right length, tensors, a 0-dim loss), or None."""
    if exercise.outputs:
        if not isinstance(got, (tuple, list)) or len(got) != len(exercise.outputs):
            return (f"{name} should return a tuple ({', '.join(exercise.outputs)}); it returned "
                    f"{show(got)} on {where}.")
    elif exercise.same is None and not isinstance(got, (torch.Tensor, tuple, list)):
        return f"{name} should return a torch tensor; it returned {type(got).__name__} on {where}."
    compared = _compared(exercise, got)
    if exercise.outputs and not isinstance(compared, (torch.Tensor, tuple, list)):
        return (f"{name}'s {exercise.outputs[0]} should be a torch tensor; it is "
                f"{type(compared).__name__} on {where}.")
    if exercise.scalar and isinstance(compared, torch.Tensor) and compared.dim() != 0:
        return (f"{name} should return a single number (a 0-dim tensor); yours has shape "
                f"{tuple(compared.shape)} on {where}. Did you forget to reduce with .sum() / .mean()?")
    return None


def _check_properties(name: str, exercise: Exercise, fn: Callable, time_limit: float) -> str | None:
    """What the first failing property check says about `fn` (a gradient, an argument check), or None."""
    for prop in exercise.properties:
        try:
            problem = prop(lambda *args, **kwargs: _call(fn, time_limit, *args, **kwargs))
        except _TooSlow as slow:
            return _too_slow_message(name, where="a property check", limit=time_limit, slow=slow)
        except Exception as error:  # noqa: BLE001 - the learner's code, again
            problem = f"it raised {type(error).__name__}: {error}"
        if problem:
            return f"{name} gives the right values but {problem}"
    return None


def _matches(exercise: Exercise, expected, got) -> bool:
    return exercise.same(expected, got) if exercise.same else close(expected, got, exercise.atol)


def _compared(exercise: Exercise, output):
    return exercise.compare(output) if exercise.compare else output


def _shows(mistake: Mistake, exercise: Exercise, case: Case, compared) -> bool:
    """Does the learner's (wrong) output on `case` look like `mistake`?"""
    if mistake.detect is not None and mistake.detect(case, compared):
        return True
    if mistake.impl is None:
        return False
    try:
        modelled = _compared(exercise, mistake.impl(**_inputs(case)))
    except Exception:  # noqa: BLE001 - a mistake model that cannot run on this case does not match it
        return False
    return _matches(exercise, modelled, compared)


def _mismatch(expected, got, exercise: Exercise) -> str:
    """Where a wrong output differs from the expected one, part by part for a tuple of named outputs."""
    if exercise.mismatch is not None:
        return exercise.mismatch(expected, got)
    if (exercise.outputs and exercise.compare is None and isinstance(got, (tuple, list))
            and len(got) == len(expected)):
        return "; ".join(f"{part}: {_difference(e, g)}"
                         for part, e, g in zip(exercise.outputs, expected, got) if not close(e, g, exercise.atol))
    return _difference(expected, got)


def _difference(expected, got) -> str:
    """Where a wrong output differs from the expected one: the largest difference in a big tensor, else both."""
    if (isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor) and got.shape == expected.shape
            and got.numel() > 8):
        difference = (got.detach().double() - expected.double()).abs().nan_to_num(math.inf)
        at = tuple(int(i) for i in torch.unravel_index(difference.argmax(), difference.shape))
        return (f"the largest difference is at index {at} (of shape {tuple(got.shape)}): expected "
                f"{expected[at].item():.6f}, got {got[at].item():.6f}")
    return f"expected {show(expected)}, got {show(got)}"


def show(value) -> str:
    """A value as a message shows it: 6 decimals, small tensors in full, big ones by their shape."""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return f"{value.item():.6f}"
    if isinstance(value, torch.Tensor):
        if value.numel() <= 8:
            return f"{[round(x, 6) for x in value.detach().double().flatten().tolist()]} (shape {tuple(value.shape)})"
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(show(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {show(v)}" for k, v in value.items()) + "}"
    return repr(value)
