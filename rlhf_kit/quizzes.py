"""The self-check questions at the end of each lab. `lab_quiz("00")` returns the widget."""

from __future__ import annotations

from .ui import Question, Quiz


def _at(position: int, question: Question) -> Question:
    """The same question with its right option moved to `position` (the questions are written right-first)."""
    options = list(question.options)
    options.insert(position, options.pop(question.answer))
    return Question(question.text, options, position, question.explanation)


QUIZZES: dict[str, list[Question]] = {
    "00": [
        _at(1, Question(
            "Pretraining minimises next-token cross-entropy on the corpus. What does that make the model good at?",
            ["Continuing text the way the corpus does", "Following instructions", "Writing what people prefer"],
            0,
            "Pretraining rewards plausible continuations, not good or requested ones. Following instructions and "
            "matching preferences are what SFT and RLHF add.",
        )),
        _at(0, Question(
            "Why does our base model keep writing past one review instead of stopping?",
            ["Its pretraining pages hold several reviews in a row, so after one review another usually follows",
             "The tokenizer has no end-of-text token",
             "The sampling temperature is too high"],
            0,
            "It imitates its corpus: pages of 3-6 reviews. Nothing in pretraining taught it that one review "
            "answers a request.",
        )),
        _at(2, Question(
            "The course keeps the pretraining corpus and the instruction demonstrations apart. Why?",
            ["So the base model has never seen the instruction format and SFT's effect can be measured",
             "To save memory", "Because the tokenizer cannot be trained on both"],
            0,
            "If the corpus already contained instruction/response pairs the base model would partly follow "
            "them, and lab 01 would have little to show.",
        )),
        _at(1, Question(
            "In the InstructGPT paper, outputs of a 1.3B-parameter model trained with RLHF were preferred by "
            "labellers over outputs of which model?",
            ["The 175B-parameter GPT-3", "A 13B SFT model only", "None: the larger model always won"],
            0,
            "A model about 100 times smaller won once it was aligned with human preferences.",
        )),
    ],
    "01": [
        _at(2, Question(
            "Why is the SFT loss computed on response tokens only?",
            ["The model should learn to answer, not to predict the instructions it is given",
             "Prompt tokens have no gradient", "It makes the loss larger"],
            0,
            "Masking the prompt spends all the learning signal on producing the response (and its end).",
        )),
        _at(0, Question(
            "The logits at position t are a distribution over which token?",
            ["Token t + 1", "Token t", "Token t - 1"],
            0,
            "A causal LM predicts the next token, so logits[:, :-1] are compared with input_ids[:, 1:].",
        )),
        _at(1, Question(
            "Why must the eos token be part of the response mask?",
            ["Otherwise the model never learns to stop after its answer", "Because eos equals pad",
             "It is not needed; eos can be masked"],
            0,
            "Stopping is a learned behaviour: the base model rambles precisely because it never learned to end "
            "after one review.",
        )),
        _at(2, Question(
            "SFT made the model follow the format. What can it still not do by itself?",
            ["Prefer the better of two valid answers: it only imitates the demonstrations it was shown",
             "Generate text", "Use the tokenizer"],
            0,
            "Imitation caps quality at the demonstrations. Comparisons between answers (lab 02) and a reward "
            "model (lab 03) give a signal for 'better', which RL can then optimise.",
        )),
    ],
}


def lab_quiz(lab: str) -> Quiz:
    """The self-check quiz of lab `lab` ("00", "01", ...)."""
    if lab not in QUIZZES:
        raise KeyError(f"No quiz for lab {lab!r}; labs with quizzes: {', '.join(QUIZZES)}.")
    return Quiz(QUIZZES[lab])
