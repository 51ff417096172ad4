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
    "02": [
        _at(1, Question(
            "Why does RLHF collect comparisons rather than asking people to score each answer?",
            ["People judge which of two answers is better far more consistently than they assign calibrated scores",
             "Comparisons need no prompt", "Scores cannot be stored in JSON"],
            0,
            "Absolute scores drift between people and over time; 'A beats B' is a judgement people make reliably, "
            "and the Bradley-Terry model turns such judgements into a reward.",
        )),
        _at(2, Question(
            "A labeller ranks 5 responses to one prompt. How many training comparisons does that give?",
            ["10", "4", "5", "25"],
            0,
            "Every pair from the ranking: K(K-1)/2 = 5*4/2 = 10.",
        )),
        _at(0, Question(
            "Two annotators agree on 80% of pairs; by chance alone they would agree on 60%. What is Cohen's kappa?",
            ["0.5", "0.8", "0.2", "0.33"],
            0,
            "kappa = (p_o - p_e) / (1 - p_e) = (0.8 - 0.6) / (1 - 0.6) = 0.5: half of the possible agreement "
            "beyond chance.",
        )),
        _at(1, Question(
            "Why are ties and skips left out of the data set the reward model trains on?",
            ["They name no better response, so there is no (chosen, rejected) pair to fit",
             "They are lost when the kernel restarts", "TRL cannot read strings"],
            0,
            "The store keeps them (and counts them); the export for Bradley-Terry training needs a winner and a "
            "loser.",
        )),
    ],
    "03": [
        _at(2, Question(
            "A pair has r(chosen) - r(rejected) = -0.5. What are P(chosen preferred) and the Bradley-Terry loss?",
            ["P = 0.3775, loss = 0.9741", "P = 0.6225, loss = 0.4741", "P = 0.5, loss = 0.6931"],
            0,
            "P = sigmoid(-0.5) = 0.3775 and the loss is -log 0.3775 = 0.9741: the model currently prefers the "
            "rejected response, so the loss is large.",
        )),
        _at(0, Question(
            "For one pair, what is dL/dr_chosen of the Bradley-Terry loss, with delta = r_chosen - r_rejected?",
            ["sigmoid(delta) - 1, always negative, so gradient descent raises r_chosen",
             "sigmoid(delta), always positive", "1 - sigmoid(delta), so r_chosen goes down"],
            0,
            "d/d(delta) of -log sigmoid(delta) is sigmoid(delta) - 1 < 0; the push is strongest when the model is "
            "most wrong (delta very negative) and fades as the pair is ordered correctly.",
        )),
        _at(1, Question(
            "Why read the reward at the last real token rather than at position -1?",
            ["With right padding, position -1 is usually a pad token, not the end of the response",
             "Position -1 has no gradient", "It is faster"],
            0,
            "Only the last real token (the eos after the response) has attended to the whole prompt and response.",
        )),
        _at(2, Question(
            "The reward model agrees with held-out labels 71% of the time. The annotator agrees with the gold "
            "ordering 73% of the time. Is the reward model weak?",
            ["No: noisy labels cap the agreement any model can reach with them",
             "Yes: anything under 90% is weak", "It cannot be told without more data"],
            0,
            "Even a perfect judge of the gold reward would agree with these labels only about 73% of the time; "
            "that is why the lab also reports agreement with the gold ordering.",
        )),
        _at(0, Question(
            "What happens to the Bradley-Terry loss if you add the same constant to every reward?",
            ["Nothing: it only sees differences, which is why rewards are normalised afterwards",
             "It grows with the constant", "It becomes negative"],
            0,
            "Only r(chosen) - r(rejected) enters the loss, so the reward's offset (and, without a margin, much of its "
            "scale) is arbitrary; the kit shifts and scales it to mean 0, std 1 on SFT samples.",
        )),
    ],
    "04": [
        _at(1, Question(
            "One token has ratio 1.3 and advantage -3, with clip epsilon 0.2. What is its PPO objective "
            "min(ratio * A, clip(ratio, 0.8, 1.2) * A)?",
            ["-3.9: the min keeps the unclipped term, so a ratio that moved the wrong way is penalised in full",
             "-3.6: clipping caps the penalty at ratio 1.2",
             "0: a ratio outside the clip range is ignored",
             "-4.8"],
            0,
            "min(1.3 * -3, 1.2 * -3) = min(-3.9, -3.6) = -3.9. Answering -3.6 (the clipped term wins, or 'take the "
            "max for negative advantages') is a common misconception: clipping only removes the incentive to push "
            "a ratio further in the direction the advantage favours, and never rescues one that moved the wrong way.",
        )),
        _at(2, Question(
            "Why is the probability ratio exactly 1 on the first minibatch of the first PPO epoch?",
            ["No update has happened yet, and the old log-probs were computed by the same forward pass at the same "
             "temperature on the same minibatch",
             "Clipping forces it to 1",
             "The reference model equals the policy at the start of training",
             "It is not exactly 1, only close to it"],
            0,
            "Before the first gradient step pi_theta is pi_old, so log pi_theta - log pi_old must be 0 exactly. "
            "Any deviation means the log-probs are computed inconsistently (temperature, dropout, padding, "
            "generate's scores), and every ratio PPO clips afterwards carries that error.",
        )),
        _at(0, Question(
            "What does raising beta, the KL coefficient, do?",
            ["It charges more for every token the policy makes more likely than the SFT reference did, so the "
             "policy stays closer to SFT and the reward rises more slowly",
             "It limits how far the ratio may move in one update",
             "It scales the reward model's score up",
             "It is the value model's learning rate"],
            0,
            "beta weighs the per-token penalty -beta * KL_t. At beta = 0 the leash is gone: the proxy reward rises "
            "fastest, the KL grows, and the policy is free to find the reward model's mistakes (lab 05). Limiting "
            "the ratio is clip epsilon's job.",
        )),
        _at(1, Question(
            "Why does the reward model's score go on the eos token, not on every token of the response?",
            ["It judges the complete response, which exists only once the eos ends it; GAE carries the credit "
             "back to the earlier tokens",
             "The eos token has the highest log-probability",
             "Putting it on every token would give the same advantages",
             "The reward model cannot score anything else"],
            0,
            "One score is earned once, when the episode ends. Adding it to every token would count it once per "
            "token and reward long answers; the value model and GAE decide how much of it each earlier token "
            "deserves.",
        )),
        _at(3, Question(
            "What does GAE's lambda trade off?",
            ["Bias against variance: lam = 0 leans on the value model's estimate (low variance, biased when V is "
             "wrong), lam = 1 uses the actual rewards to the end (unbiased, high variance)",
             "Memory against speed",
             "The KL penalty against the score",
             "How strongly the ratio is clipped"],
            0,
            "A_t sums the TD errors delta_{t+k} weighted by (gamma * lam)^k. lam = 0 gives A_t = delta_t, one real "
            "reward plus V's guess; lam = 1 gives reward-to-go minus V_t, with all the randomness of the rest of "
            "the response. The kit uses 0.95.",
        )),
    ],
    "05": [
        _at(2, Question(
            "Goodhart's law says a measure that becomes a target stops being a good measure. Where does it bite "
            "in RLHF?",
            ["PPO maximises the reward model's score, a learned stand-in for what people prefer; pushed hard "
             "enough, the score keeps rising while the quality it stood for falls",
             "The annotators disagree 27% of the time",
             "The SFT loss stops falling after enough steps",
             "The value model overfits its returns"],
            0,
            "The reward model was a good measure on the responses it was trained to compare. Once it is the target, "
            "the policy is paid for whatever the model scores high, including its mistakes: the proxy curve keeps "
            "climbing while the gold curve turns down.",
        )),
        _at(0, Question(
            "Why does the KL penalty to the SFT policy reduce reward hacking?",
            ["The reward model is only trustworthy near the responses it was trained on, which came from the SFT "
             "policy; the penalty charges the policy for leaving that region",
             "It makes the reward model more accurate",
             "It stops each PPO update from moving the ratio too far",
             "It makes responses shorter"],
            0,
            "Every nat of KL costs beta nats of reward, so the policy only drifts where the gain in score pays for "
            "it. Limiting one update's ratio is clipping's job, and clipping is relative to the previous policy, "
            "not to the SFT model: many small clipped steps can still walk far away.",
        )),
        _at(3, Question(
            "Best-of-n sampling draws n responses and keeps the one the reward model scores highest. How far is "
            "that from the policy it samples, in KL?",
            ["log(n) - (n - 1)/n nats: it grows only like log n (about 1.8 nats for n = 16)",
             "n nats", "0: nothing was trained, so the policy did not change", "log(n) * n nats"],
            0,
            "The chosen responses follow a different distribution from a single sample, even though no weights "
            "changed. Its KL from the sampler is log n - (n - 1)/n, which is why best-of-n buys a lot of reward "
            "per nat, and why it can be drawn on the same axes as PPO.",
        )),
        _at(1, Question(
            "Why is a reward model easy to exploit on responses unlike the ones it was trained on?",
            ["It learned from comparisons of SFT samples; where no such response was ever compared, nothing "
             "tied its score to quality, and an optimiser seeks out exactly those regions",
             "Its weights are frozen during PPO",
             "Its scores are normalised to mean 0",
             "It reads the response as text instead of tokens"],
            0,
            "Reward modelling is supervised learning, and PPO moves the inputs out of the training distribution. "
            "A looped word or a run-on review was rarely or never compared, so its score is an extrapolation, and "
            "the policy is rewarded for finding the extrapolations that came out too high (lab 03's probe).",
        )),
    ],
}


def lab_quiz(lab: str) -> Quiz:
    """The self-check quiz of lab `lab` ("00", "01", ...)."""
    if lab not in QUIZZES:
        raise KeyError(f"No quiz for lab {lab!r}; labs with quizzes: {', '.join(QUIZZES)}.")
    return Quiz(QUIZZES[lab])
