"""The tests every exercise's checker must pass, written once for all the exercise test modules:

    (test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
     test_catalogue_hints_are_all_covered, test_not_implemented_stub) = contract(NAMES, WRONG, CORRECT)

`NAMES` are the module's exercises, `WRONG` (exercise, wrong implementation, phrase its message must contain)
the independently written mistakes, `CORRECT` (exercise, correct implementation) the independently written right
answers. A module keeps its own tests for what is particular to its exercises (worked examples, errors).
"""

from __future__ import annotations

import inspect

import pytest

from rlhf_kit.exercises import EXERCISES, verify


def contract(names, wrong, correct=()):
    names, wrong, correct = list(names), list(wrong), list(correct)

    @pytest.mark.parametrize("name", names)
    def test_reference_passes(name):
        ok, message = verify(name, EXERCISES[name].reference)
        assert ok, message
        assert "passed" in message

    @pytest.mark.parametrize("name, fn", correct, ids=[f"{n}-{f.__name__}" for n, f in correct])
    def test_independent_correct_versions_pass(name, fn):
        ok, message = verify(name, fn)
        assert ok, message

    @pytest.mark.parametrize("name, fn, phrase", wrong, ids=[f"{n}-{w.__name__}" for n, w, _ in wrong])
    def test_typical_mistakes_are_named(name, fn, phrase):
        ok, message = verify(name, fn)
        assert not ok
        assert phrase in message, message

    @pytest.mark.parametrize("name", names)
    def test_catalogue_hints_are_all_covered(name):
        """Every hint in the checker's catalogue is reached by one of the independent wrong implementations."""
        phrases = [phrase for exercise, _, phrase in wrong if exercise == name]
        for mistake in EXERCISES[name].mistakes:
            assert any(phrase in mistake.hint for phrase in phrases), mistake.hint

    @pytest.mark.parametrize("name", names)
    def test_not_implemented_stub(name):
        def stub(*args, **kwargs):
            raise NotImplementedError

        stub.__signature__ = inspect.signature(EXERCISES[name].reference)
        assert verify(name, stub) == (False, f"{name} is not implemented yet.")

    if not correct:
        test_independent_correct_versions_pass = None
    return (test_reference_passes, test_independent_correct_versions_pass, test_typical_mistakes_are_named,
            test_catalogue_hints_are_all_covered, test_not_implemented_stub)
