"""Notebook widgets and views: a live training curve, self-check quizzes, sample tables, the preference collector
(alone, or for a classroom), the PPO playground and the DPO playground.

Each name is imported on first use (PEP 562), so that `from rlhf_kit.ui import quiz` or a classroom page's
`rlhf_kit.ui.classroom` does not load torch: only the playgrounds, the live curve and the tables need it.
"""

from importlib import import_module

_WHERE = {"ClassroomCollector": "classroom", "DPOPlayground": "dpo_playground", "LiveCurve": "live",
          "PreferenceCollector": "collector", "Playground": "playground", "Question": "quiz", "Quiz": "quiz",
          "quiz": "quiz",
          "sample_table": "tables", "side_by_side": "tables", "summary_table": "tables"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = import_module(f".{_WHERE[name]}", __name__)
    # Importing the submodule binds its own name here (rlhf_kit.ui.quiz, the module), which would hide the
    # function `quiz`: bind every name it provides, that one included, to the object.
    for other, where in _WHERE.items():
        if where == _WHERE[name]:
            globals()[other] = getattr(module, other)
    return globals()[name]


def __dir__():
    return sorted({*globals(), *__all__})
