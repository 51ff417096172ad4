"""The self-check questions at the end of each lab. `lab_quiz("00")` returns the widget.

Each question asks about something its lab taught. Every wrong option is a mistake a learner plausibly makes (an
arithmetic slip, a neighbouring concept, a misreading the lab warns about), and every option carries its own
feedback: why it is right, or what misconception it reflects. Option lengths are balanced, and the right answer's
position varies, so that neither gives the answer away (tests/test_tables_quizzes.py measures both).
"""

from __future__ import annotations

from .ui import Question, Quiz


def _q(text: str, answer: int, choices: list[tuple[str, str]]) -> Question:
    """A question from (option, feedback) pairs, so that each option sits beside what Check says about it."""
    return Question(text, [option for option, _ in choices], answer,
                    feedback=[feedback for _, feedback in choices])


QUIZZES: dict[str, list[Question]] = {
    "00": [
        _q("Pretraining minimises next-token cross-entropy on the pages. What does that make the model good at?", 2, [
            ("Answering the instructions found in its pages",
             "The pages hold no instructions in the demonstrations' format (the course keeps them apart), and the "
             "loss never asks for an answer: it rewards whatever token the page has next, question or not."),
            ("Writing the reviews the gold reward likes best",
             "Nothing in pretraining consults the gold reward. The pages include sloppy reviews, and the loss "
             "rewards predicting those just as much as good ones."),
            ("Continuing any text the way its pages tend to",
             "A low next-token loss means plausible continuations of text like the pages, nothing more. "
             "Answering a request, and answering it well, are what SFT and RLHF add."),
            ("Telling positive reviews from negative ones",
             "No sentiment labels are used. The model may pick sentiment up along the way, because it helps to "
             "predict the next word, but its only target is the next token."),
        ]),
        _q("Suppose the vocabulary had 1,000 tokens. What loss, in nats per token, does a model that guesses "
           "uniformly get?", 0, [
            ("ln 1000 = 6.91",
             "Every token gets probability 1/1000 and the loss is -ln(1/1000) = ln 1000. The lab prints this "
             "baseline for the real vocabulary beside the trained model's loss."),
            ("log2 1000 = 9.97",
             "That is the same uncertainty in bits. Nats use the natural log, as PyTorch's cross-entropy does; "
             "bits = nats / ln 2."),
            ("1/1000 = 0.001",
             "That is the probability of each token. The loss is its negative log: -ln(1/1000) = ln 1000."),
            ("log10 1000 = 3.00",
             "Base 10 gives neither nats nor bits. Cross-entropy in nats uses the natural log."),
        ]),
        _q("Given the start of a review, the base model finishes it and goes on into another one. Why?", 2, [
            ("Its tokenizer has no end-of-text token",
             "It has one, and lab 01 teaches the model to emit it after an answer. The base model rarely predicts "
             "it after one review because on its pages a review is usually followed by another."),
            ("Its sampling temperature is set too high",
             "Temperature changes how random each pick is, not what the model learned comes next. At any "
             "temperature, what most often follows a review on its pages is another review."),
            ("On its pages, one review is usually followed by another",
             "It imitates its pages, several reviews in a row. Nothing in pretraining told it that one review "
             "answers a request."),
            ("Its context window fills up after one review",
             "A review is far shorter than the context the model was trained on. A full context would cut the "
             "text off, not make it start a new review."),
        ]),
        _q("You sample at temperature 0.3 instead of 1.0. What happens to the next-token distribution?", 3, [
            ("It flattens: rare tokens are drawn more often",
             "That is a temperature above 1. Dividing the logits by 0.3 multiplies the gaps between them by "
             "about 3.3, so the likely tokens pull further ahead."),
            ("Only the top 30% of tokens can still be drawn",
             "That mixes temperature up with top-k or top-p truncation. Temperature rescales every logit and "
             "removes no token; a rare one just becomes much rarer."),
            ("None: each probability is scaled by 0.3, then renormalised",
             "Scaling every probability by the same factor and renormalising would indeed change nothing, which "
             "is why temperature divides the logits instead: that raises each probability to the power 1/0.3 "
             "before renormalising."),
            ("Likely tokens get likelier, so samples vary less",
             "softmax(logits / 0.3) sharpens the distribution towards its most likely tokens. As the temperature "
             "goes to 0, sampling becomes greedy decoding."),
        ]),
        _q("Top-k sampling with k = 50 at temperature 1.0: which tokens can be drawn next?", 1, [
            ("Any token, with the 50 most likely boosted above the rest",
             "Top-k does not boost, it cuts: every token outside the 50 most likely gets probability 0 (its "
             "logit is set to minus infinity) before sampling."),
            ("The top 50, renormalised among themselves",
             "The other logits are set to minus infinity, so the softmax spreads all the probability over the "
             "50 that remain, in their original proportions."),
            ("Only those with probability above 1/50",
             "That is a probability threshold, closer to min-p sampling. Top-k keeps a fixed number of tokens, "
             "however likely or unlikely they are."),
            ("The 50 most likely, each with an equal chance",
             "Top-k keeps the model's preferences among the survivors: a token twice as likely as another stays "
             "twice as likely."),
        ]),
    ],
    "01": [
        _q("Why does the SFT loss leave the prompt tokens out (mask 0)?", 2, [
            ("Prompt tokens have no gradient to follow",
             "They have one like any other token. Leaving them in is legal and trains the model to predict "
             "instructions too, a skill it never uses: it is always given the instruction."),
            ("So that answers cannot attend to the prompt",
             "That would be the attention mask's job, and every response token still attends to the whole "
             "prompt. The loss mask only decides which predictions count in the loss."),
            ("So it learns to answer, not to write prompts",
             "All of the learning signal goes to producing the response and its end-of-text token. The prompt "
             "is context: always given, never generated."),
            ("The prompt is padding, like the end of a batch",
             "Padding is filler with nothing to learn; the prompt is real text the model reads and attends to. "
             "It is left out of the loss only because the model never has to write it."),
        ]),
        _q("A teammate also sets the mask to 0 on the end-of-text token ('it is a special token, not part of the "
           "answer'). What does the fine-tuned model do?", 1, [
            ("Nothing changes: generate() appends the eos itself",
             "generate stops when the model samples the eos; it never adds one. A model that was never trained "
             "to produce it rarely does, and runs on to the token limit."),
            ("It answers, but rarely stops after its answer",
             "Stopping is learned like any other token. With the eos out of the loss nothing teaches the model to "
             "end after one review, and it rambles on like the base model."),
            ("Training fails: the loss has no target left",
             "The response tokens are still targets, and the loss trains fine. What is lost is one target, the "
             "eos, and with it the habit of stopping."),
            ("It stops sooner, since eos is never penalised",
             "Masking takes the eos out of the loss: it is neither rewarded nor penalised, so its probability "
             "after an answer stays where the base model left it, low."),
        ]),
        _q("logits is (batch, seq, vocab). Which pairing gives each prediction its target?", 0, [
            ("logits[:, :-1] with input_ids[:, 1:]",
             "The logits at position t are the model's guess for token t + 1, so drop the last logit (it "
             "predicts past the end) and the first token (nothing predicts it)."),
            ("logits[:, 1:] with input_ids[:, :-1]",
             "Shifted the wrong way: this asks the logits at position t to predict token t - 1, which the model "
             "has already seen."),
            ("logits with input_ids, unshifted",
             "Without the shift each token is scored as a prediction of itself, which a causal model can read "
             "from its own input: the loss drops towards 0 and nothing useful is learned."),
            ("logits[:, :-1] with input_ids[:, :-1]",
             "Both sides are cut the same way, so this is still unshifted: position t is scored against token t, "
             "which it can see."),
        ]),
        _q("The lab's sft_loss sums the negative log-likelihoods of the response tokens. What does it divide by?",
           3, [
            ("The batch size: one summed term per sequence",
             "Then each sequence contributes its summed loss, and the loss grows with the length of the answers; "
             "the right learning rate would change with them."),
            ("Every position: batch size times sequence length",
             "The sum covers response tokens only, so dividing by every position counts prompt and padding in "
             "the denominator: the loss would shrink when prompts get longer or a batch is padded more."),
            ("Nothing: a sum gives the gradient more signal",
             "A sum grows with the batch and the answers' length, so the right learning rate would change with "
             "them. A mean keeps the loss in nats per token, comparable across batches."),
            ("The number of response tokens (eos included) in the batch",
             "A token mean: each response token weighs the same, so a long answer counts more than a short one. "
             "Averaging each sequence first is another convention; this lab's formula is the token mean."),
        ]),
        _q("SFT lifted the gold reward to about the demonstrations' own level. Why would more SFT on the same "
           "demonstrations not take it much further?", 1, [
            ("The model is too small to learn more",
             "The measurement points elsewhere: SFT lands near the demonstrations' gold, flaws included. A "
             "bigger model would imitate them more faithfully, flaws and all."),
            ("It can only imitate them, their flaws included",
             "The loss rewards reproducing the demonstrations, the lukewarm and rambling ones too, so imitation "
             "tops out at their quality. Comparisons (lab 02) can say which of two answers is better."),
            ("The SFT loss has already reached zero",
             "It stays well above zero: many different reviews answer each instruction, and the model can at "
             "best match their spread. A lower loss would mean closer imitation, not better reviews."),
            ("The prompt is masked, so it cannot read it",
             "Masking only takes the prompt out of the loss; the model still reads and attends to it, and its "
             "gold reward shows it mostly answers what was asked."),
        ]),
    ],
    "02": [
        _q("Why does RLHF ask labellers to compare two answers rather than score each one?", 1, [
            ("A comparison carries more information than a score",
             "Less, if anything: one bit against a point on a scale. The gain is reliability: people's scales "
             "differ and drift, while their judgements of which answer is better agree far more."),
            ("People agree more on which is better than on scores",
             "A 7 from one labeller is a 5 from another, and a tired labeller scores differently from a fresh "
             "one; 'A is better than B' is a judgement people make consistently, and Bradley-Terry (lab 03) "
             "turns such judgements into a reward."),
            ("A comparison needs no instruction to judge by",
             "It does: whether an answer is better depends on what was asked. The widget shows the instruction "
             "above both answers for that reason."),
            ("Scores cannot be used to train a reward model",
             "They can: a regression on scores is a reward model too. It is the noise in scores, not the "
             "training, that makes comparisons the better buy."),
        ]),
        _q("A labeller ranks 5 distinct answers to one prompt. How many pairs does ranking_to_pairs return?", 1, [
            ("20",
             "That counts each pair twice, as (A, B) and (B, A). A ranking puts one of them above the other, so "
             "each unordered pair gives one (chosen, rejected) row."),
            ("10",
             "Every pair (i, j) with i ranked above j: 5 * 4 / 2 = 10. One read of five answers buys ten "
             "comparisons, which is why InstructGPT's labellers ranked."),
            ("4",
             "Those are the neighbouring pairs only (1st > 2nd, 2nd > 3rd, ...). The ranking also says "
             "1st > 3rd and so on: all 10 pairs are implied."),
            ("120",
             "120 = 5! is the number of possible rankings of five answers, not the pairs one ranking implies."),
        ]),
        _q("Two labellers agree on 80% of pairs; labelling at random, each with their own frequencies, they would "
           "agree on 60%. What is Cohen's kappa?", 2, [
            ("0.2",
             "That is the agreement beyond chance, 0.8 - 0.6, before it is scaled: kappa divides it by the most "
             "there could be, 1 - 0.6."),
            ("0.8",
             "That is the raw agreement. Kappa asks how much of it chance does not explain."),
            ("0.5",
             "(0.8 - 0.6) / (1 - 0.6) = 0.5: half of the agreement that was possible beyond chance."),
            ("0.25",
             "That divides by the observed agreement, (0.8 - 0.6) / 0.8. Kappa divides by what was possible "
             "beyond chance, 1 - 0.6."),
        ]),
        _q("Two labellers each agree with the gold ordering on 75% of pairs, independently of each other. How often "
           "do they agree with each other?", 3, [
            ("75%",
             "Each one's accuracy is not their agreement: they disagree whenever exactly one of them errs, on "
             "2 * 0.75 * 0.25 = 37.5% of pairs."),
            ("56.25%",
             "That counts only the pairs both get right, 0.75 * 0.75. When both are wrong on a two-way choice "
             "they pick the same answer too."),
            ("50%",
             "That subtracts each one's errors from 100%, but when both err on the same pair they agree. "
             "Agreement is both right or both wrong."),
            ("62.5%",
             "Both right (0.75 * 0.75 = 0.5625) or both wrong (0.25 * 0.25 = 0.0625). With independent errors, "
             "agreement between two labellers (what InstructGPT reported) is lower than each one's agreement with "
             "the truth."),
        ]),
        _q("Your labels include ties and skips. What does the export for reward-model training do with them?", 0, [
            ("Leaves them out of the data set, and counts them",
             "The Bradley-Terry loss needs a winner and a loser, and a tie or a skip names neither. The store "
             "keeps every click; the export reports how many it left out."),
            ("Keeps ties, with chosen and rejected in random order",
             "That turns each tie into a coin-flip label, pure noise for the reward model. A tie names no better "
             "answer, so it gives no (chosen, rejected) row."),
            ("Deletes them from your label file on disk too",
             "The store keeps every click, ties and skips included: the file is the record of what you did. "
             "Only the export for training leaves them out."),
            ("Turns skips into ties, then keeps the ties",
             "A skip says you did not judge the pair at all, and a tie names no winner: neither gives a "
             "(chosen, rejected) row. Both are left out of the export."),
        ]),
    ],
    "03": [
        _q("A pair has r_chosen - r_rejected = +1. Under Bradley-Terry, what are P(chosen preferred) and the "
           "pair's loss?", 3, [
            ("P = 0.27, loss = 1.31",
             "Sign slip: that is sigmoid(-1). A positive difference means the model already prefers the chosen "
             "answer, so P is above one half."),
            ("P = 0.73, loss = 0.27",
             "P is right, but the loss is -log P = 0.31, not 1 - P."),
            ("P = 0.73, loss = -0.31",
             "The log of a probability is negative and the loss is its negative: -log 0.73 = +0.31. A loss below "
             "zero would need a probability above 1."),
            ("P = 0.73, loss = 0.31",
             "sigmoid(1) = 0.73 and -log 0.73 = 0.31. The pair is ordered right, so the loss is below log 2 = "
             "0.69, the loss at a difference of 0."),
        ]),
        _q("Why does the Bradley-Terry loss use F.logsigmoid(delta) rather than torch.log(torch.sigmoid(delta))?",
           0, [
            ("At very negative deltas, log(sigmoid) gives -inf",
             "sigmoid(-200) is about 1e-87, below what float32 can hold, so it rounds to 0 and its log is -inf. "
             "logsigmoid computes -softplus(-delta) = -200 directly."),
            ("They are the same; logsigmoid is only faster",
             "The same function on paper, not in floating point: sigmoid(-200) rounds to 0, and log(0) is -inf. "
             "logsigmoid never forms that probability, so it stays finite."),
            ("log(sigmoid) has the wrong sign for the loss",
             "Both give log sigmoid(delta), a negative number, and the loss is minus either. The difference "
             "shows only at very negative deltas, where one of them breaks."),
            ("logsigmoid clips delta to a safe range first",
             "It clips nothing: a badly misordered pair still gets a large loss and a full gradient, as it "
             "should. It computes the log without a probability that rounds to 0."),
        ]),
        _q("Which rule finds each row's last real token for both right padding (1 1 1 0 0) and left padding "
           "(0 0 1 1 1)?", 1, [
            ("Position mask.sum() - 1",
             "Right for right padding only: on 0 0 1 1 1 it gives position 2, the first real token, not the "
             "last."),
            ("The largest position whose mask is 1",
             "Position 2 for 1 1 1 0 0, position 4 for 0 0 1 1 1: the eos after the response, the only position "
             "that has attended to the whole prompt and response."),
            ("Always position -1, the end of the row",
             "Right for left padding only: with right padding position -1 is a pad token, and the reward would "
             "be read where nothing was written."),
            ("The first position whose mask is 1",
             "That is where the text starts. In a causal model that position has seen only the first token and "
             "nothing of the response: the reward must come from the end."),
        ]),
        _q("The held-out labels follow the gold ordering on 75% of pairs. A reward model that orders every pair "
           "exactly as the gold scorer does: how often does it agree with those labels?", 1, [
            ("100%: it is a perfect model",
             "Perfect against the gold ordering, yes; but a quarter of the labels disagree with that ordering, "
             "and it disagrees with every one of them."),
            ("About 75%, the labels' own rate",
             "The label noise is a ceiling no model can beat on these labels. That is why the lab also measures "
             "agreement with the gold ordering, which only a toy world can show."),
            ("About 56%, that is 0.75 * 0.75",
             "That multiplies two accuracies as if the model erred too. This one never does, so it agrees "
             "exactly where the labels are right: 75%."),
            ("It cannot be known without training it",
             "It follows from the definitions: it agrees with a label exactly when the label follows the gold "
             "ordering, 75% of the time."),
        ]),
        _q("You add 5 to every reward the model outputs. What happens to the Bradley-Terry loss?", 2, [
            ("Every pair's loss falls, as both rewards rise",
             "Both rewards rise by the same 5, so their difference, the only thing the loss reads, is "
             "unchanged."),
            ("It grows: the rewards drift further from 0",
             "The loss never sees a reward on its own, only r_chosen - r_rejected. Where 0 lies is arbitrary, "
             "which is why the kit normalises the reward afterwards."),
            ("Nothing: it only sees reward differences",
             "The offset is arbitrary, so the kit shifts and scales the reward to mean 0, standard deviation 1 "
             "on SFT samples: in lab 04 a reward of +1 means one standard deviation better than SFT usually "
             "does."),
            ("Each P(chosen) moves towards 1",
             "P(chosen) is sigmoid(r_chosen - r_rejected), not sigmoid(r_chosen): adding 5 to both leaves it "
             "where it was."),
        ]),
        _q("Where is the trained reward model least trustworthy?", 2, [
            ("On held-out prompts it never trained on",
             "The lab measured it on held-out prompts, with SFT-like answers, and it ordered them well above "
             "chance. New prompts with familiar kinds of answer are not the weak spot."),
            ("On close pairs, where the labellers disagree",
             "Close pairs are hard to order, but there it is merely unsure, with a margin near 0 (see the "
             "calibration plot). The danger is where it is confidently wrong."),
            ("On answers unlike the SFT samples it saw",
             "It learned from comparisons of SFT samples; where no such answer was ever compared (a loop, a "
             "run-on) nothing tied its score to quality. The probe shows where it overrates them, and PPO will "
             "look for exactly those."),
            ("On short answers: it reads just one token",
             "It reads one position, but that position has attended to the whole prompt and response. Length is "
             "not what fools it; unfamiliar kinds of answer are."),
        ]),
    ],
    "04": [
        _q("One token has ratio 1.3 and advantage -3, with clip epsilon 0.2. What is its objective "
           "min(ratio * A, clip(ratio, 0.8, 1.2) * A)?", 2, [
            ("-3.6",
             "That is the clipped term, 1.2 * -3: the max, not the min ('for a negative advantage the clipped "
             "term wins' is a common misreading). With -3.6 the objective would be flat in the ratio, and the "
             "bad token would keep its gain."),
            ("0, as the ratio is outside the clip range",
             "Clipping drops no token: the min still includes the unclipped term, and here that term is the one "
             "in charge."),
            ("-3.9",
             "min(-3.9, -3.6) = -3.9. The token was bad and became more likely; the min keeps the unclipped term, "
             "whose gradient pushes it back down. Clipping never rescues a ratio that moved the wrong way."),
            ("-2.4",
             "That clips the ratio to 0.8, as if a negative advantage used 1 - epsilon. clip(1.3, 0.8, 1.2) is "
             "1.2 whatever the advantage's sign, and the min then picks -3.9."),
        ]),
        _q("In ppo_policy_loss, what does clip epsilon bound?", 1, [
            ("The advantage, clipped to [-eps, +eps]",
             "Clipping the advantage would shrink every token's signal, good or bad, and do nothing to stop a "
             "token moving far. PPO leaves A alone and clips the ratio."),
            ("The probability ratio, to [1 - eps, 1 + eps]",
             "The ratio pi_theta / pi_old is clipped, and the min with the unclipped term means that only moves "
             "in the direction the advantage favours stop paying beyond 1 +/- eps."),
            ("The gradient norm, at eps per update",
             "The trainer does clip each model's gradient norm, but that is a separate safeguard with its own "
             "threshold. Epsilon acts inside the objective, on the ratio."),
            ("The log-prob difference, to [-eps, +eps]",
             "Close, but not the same: bounding log pi - log pi_old at +/- 0.2 bounds the ratio at e^-0.2 = 0.82 "
             "and e^0.2 = 1.22, not at 0.8 and 1.2. PPO clips the ratio itself."),
        ]),
        _q("The KL penalty charges the policy for drifting away from which model?", 3, [
            ("The policy that sampled this batch",
             "That is pi_old, the ratio's denominator, and it moves every batch. A penalty relative to it would "
             "reset after each update, so many small steps could walk arbitrarily far. The reference never "
             "moves."),
            ("The base model pretrained in lab 00",
             "Staying near the base model would pull the policy back towards text that ignores the instruction "
             "format. The reference is the SFT model, the policy's own starting point."),
            ("The reward model of lab 03",
             "The reward model gives the score; it has no distribution over next tokens to compare with. The KL "
             "compares two next-token distributions: the policy's and the frozen SFT model's."),
            ("The SFT model, frozen as the reference",
             "The reference is the SFT model, frozen. Its samples are what the reward model was trained on, so "
             "staying near it keeps the policy where the reward model knows how to judge."),
        ]),
        _q("In one response, some tokens have k1 = log pi(y_t) - log pi_ref(y_t) below zero. What does that tell "
           "you?", 0, [
            ("The policy made them less likely than pi_ref did",
             "log pi < log pi_ref on the sampled token. The penalty -beta * k1 is a small bonus there; the true "
             "KL, an average over samples, is still at least 0."),
            ("A bug: a KL divergence can never be negative",
             "The KL, an expectation over samples, is never negative; a single token's k1 term can be. Averaged "
             "over many samples the negative terms are outweighed, and the mean estimates the true KL."),
            ("Clamp them at 0, since only drift away should cost",
             "Clamping biases the estimate upwards: the mean of max(k1, 0) overstates the KL. For terms that are "
             "never negative use k3, which has the same expectation as k1."),
            ("k3 would be negative on those tokens as well",
             "k3 = (e^u - 1) - u is never negative, because e^u >= 1 + u for every u. It has the same "
             "expectation as k1 without the negative terms."),
        ]),
        _q("The reward model's score lands on each response's eos token only. How do the earlier tokens get credit "
           "for it?", 0, [
            ("Through GAE: each advantage sums later TD errors",
             "A_t sums the TD errors from t on, discounted by gamma * lambda per step, so a final score better "
             "than the value model expected raises the advantages of the tokens that led to it. The playground's "
             "advantage colouring shows it spread over the tokens."),
            ("They don't: only the eos's probability is updated",
             "Every response token gets an advantage and a gradient. Without the credit passed back, the policy "
             "could learn only when to stop, never what to write."),
            ("Each token also gets the score as its own reward",
             "That counts the score once per token, so a longer answer would earn more reward for the same "
             "quality. The score is earned once, when the response is complete."),
            ("Through the KL penalty, which spreads it evenly",
             "The KL penalty is a separate per-token charge for drifting from the reference and carries no part "
             "of the score. Credit for the score travels through the value model and GAE."),
        ]),
        _q("Before any update the ratio is exactly 1. What is the gradient of ratio * A for one token there?", 3, [
            ("Zero, since the ratio is a constant 1",
             "Its value is 1, but it still depends on theta: the gradient of pi_theta / pi_old at pi_theta = "
             "pi_old is grad log pi_theta. A value of 1 is not a constant."),
            ("grad pi(y_t) * A, without the log",
             "grad (pi_theta / pi_old) = grad pi_theta / pi_old, and at pi_theta = pi_old that is "
             "grad pi_theta / pi_theta = grad log pi_theta: the division by pi_old turns it into the log."),
            ("grad log pi(y_t), as A is clipped away",
             "At ratio 1 nothing is clipped, and the advantage is a constant weight on the gradient: it sets the "
             "direction and the size of each token's push."),
            ("A * grad log pi(y_t), as in REINFORCE",
             "grad ratio = ratio * grad log pi, which at ratio 1 is grad log pi. So PPO's surrogate starts from "
             "exactly REINFORCE's gradient, grad log pi * (R - b), with the advantage in place of R - b."),
        ]),
    ],
    "05": [
        _q("Goodhart's law: a measure that becomes a target stops being a good measure. Where does it bite in this "
           "course?", 1, [
            ("The labellers disagree about a quarter of the time",
             "That is label noise: it caps how well the reward model can match the labels, but it is there "
             "before anything is optimised. Goodhart is about what optimisation does to a measure."),
            ("PPO raises the proxy while the gold reward falls",
             "The reward model's score measured quality well on SFT samples. Once PPO maximises it, the policy is "
             "paid for the reward model's mistakes too, and past some KL the gold reward turns down while the "
             "proxy climbs."),
            ("The reward model overfits its training pairs",
             "It generalised to held-out prompts (lab 03). The trouble appears only under optimisation pressure, "
             "on answers nobody compared."),
            ("The SFT loss stops falling after enough steps",
             "A loss levelling off is convergence, not Goodhart. Goodhart needs a target that stands in for "
             "something else and is optimised until the two part."),
        ]),
        _q("Optimise the proxy harder and harder, with no KL penalty. Against sqrt(KL) from the SFT model, what "
           "does the gold reward do?", 0, [
            ("Rises, peaks, then falls as the proxy climbs",
             "Over-optimisation. Gao et al. (2022) found the same shape at scale and fitted it with simple "
             "functions of sqrt(KL); the proxy's rise says nothing about where the gold reward peaks."),
            ("Rises and falls together with the proxy",
             "The proxy does not fall: it is what the optimiser pushes up, and it keeps rising. The two curves "
             "part, which is the point of the plot."),
            ("Keeps rising with the proxy, only more slowly",
             "That holds early on, and the leashed runs stay in that regime. Pushed far enough, with no penalty, "
             "the gold reward peaks and turns down while the proxy still rises."),
            ("Falls from the first step on",
             "Early steps help: the policy first learns what the reward model and the gold reward agree on. The "
             "fall comes later, once the real gains are used up."),
        ]),
        _q("Best-of-16: sample 16 answers and keep the one the reward model likes best. How far is that from the "
           "SFT policy, by the formula log n - (n - 1)/n?", 2, [
            ("About 2.8 nats: log 16",
             "log 16 = 2.77 is only the first term; subtract (n - 1)/n = 15/16."),
            ("0: no weights were changed",
             "No weights changed, but the chosen answers follow a new distribution: the best of 16 is not a "
             "typical single sample. The KL measures that distribution's distance, however it was produced."),
            ("At most about 1.8 nats",
             "log 16 - 15/16 = 1.84. It is an upper bound, reached only when the sampler (almost) never repeats "
             "an answer (Beirami et al. 2024), and it grows like log n: best-of-n buys reward cheaply in KL."),
            ("16 nats, one for each sample drawn",
             "More samples cost compute, not KL: the KL grows only like log n, about 1.8 nats at n = 16."),
        ]),
        _q("A small model often samples the same answer twice among its n. Then best-of-n's true KL from the SFT "
           "policy is:", 1, [
            ("Higher than log n - (n - 1)/n",
             "The formula is an upper bound. Duplicates mean the n draws offer fewer real choices, so the "
             "selection moves the distribution less, not more."),
            ("Lower than log n - (n - 1)/n",
             "The formula assumes the sampler never repeats an answer; with repeats there is less to choose "
             "between, and the KL falls below it (Beirami et al. 2024). A KL measured from samples can come out "
             "lower."),
            ("Exactly log n - (n - 1)/n",
             "The formula is exact only when repeated answers have vanishing probability. Repeats make it an "
             "overestimate."),
            ("Undefined: KL needs distinct samples",
             "KL is defined for any two distributions over answers; duplicates only make the best-of-n "
             "distribution closer to the SFT one."),
        ]),
        _q("PPO already clips every update. Why add a KL penalty to the SFT model against reward hacking?", 3, [
            ("The penalty makes the reward model more accurate",
             "The reward model is frozen during PPO; nothing changes its accuracy. The penalty changes where the "
             "policy goes, not how well the proxy judges."),
            ("Clipping only acts on positive advantages",
             "Clipping acts on both signs (above 1 + eps for A > 0, below 1 - eps for A < 0). Its limit is that "
             "it is relative to the previous policy."),
            ("They are the same brake; the KL is a backup",
             "They compare with different models: clipping with the policy that sampled the batch, which moves "
             "every step, the KL penalty with the frozen SFT model, which never does."),
            ("Clipping limits each step, not the sum of steps",
             "Clipping bounds the incentive within one update, relative to the policy that sampled the batch, "
             "and the next batch starts from wherever that left off. The penalty charges the total distance "
             "from the SFT samples the reward model was trained on, where its scores can be trusted."),
        ]),
        _q("An adaptive KL controller targets 6 nats. After a step the KL is 9 nats. What happens to beta?", 2, [
            ("It falls, so the reward can catch up",
             "Backwards: the policy is over budget, so the charge per nat must rise to pull it back. Beta falls "
             "only while the KL is under target."),
            ("It rises by 50%, the relative error",
             "The relative error is (9 - 6)/6 = 0.5, but the controller clips it to 0.2 and then scales it by "
             "n_responses / horizon: each step moves beta a little."),
            ("It rises, with the error capped at 0.2",
             "e = clip((9 - 6)/6, -0.2, 0.2) = 0.2, and beta is multiplied by 1 + 0.2 * n_responses / horizon. "
             "It keeps rising while the policy is over budget."),
            ("It stays: beta is fixed for the whole run",
             "That is the fixed-beta PPO of lab 04. The controller moves beta after every step: up while over "
             "budget, down while under."),
        ]),
    ],
    "06": [
        _q("DPO's loss has no log Z(x), the normaliser of the optimal policy. Why may it be dropped?", 2, [
            ("Z(x) is close to 1 once the policy is trained",
             "Z(x) = sum over responses of pi_ref(y|x) exp(r(x,y)/beta) can be any positive number, and training "
             "does not change it: it belongs to the reward and the reference, not to the policy."),
            ("The frozen reference model absorbs it",
             "The reference appears in the log-ratio beta log(pi / pi_ref); Z(x) is a separate term, "
             "beta log Z(x), added to every implicit reward of instruction x."),
            ("Both responses answer x, so it cancels",
             "Bradley-Terry looks only at r(x, y_w) - r(x, y_l). Both rewards carry the same beta log Z(x), so "
             "the difference, and the loss, never contain it. The toy in section 1 printed that constant."),
            ("DPO estimates it from each batch",
             "No estimate is needed, and none is made: Z(x) cancels exactly in the difference of two rewards "
             "for the same instruction. Estimating it would need a sum over all possible responses."),
        ]),
        _q("Before the first update the policy equals the reference. What is DPO's loss on every pair?", 1, [
            ("0: the model has nothing to correct yet",
             "Every margin is 0, and -log sigmoid(0) = log 2, not 0. A loss of 0 would need an infinite margin, "
             "which is exactly why DPO keeps pushing."),
            ("log 2, about 0.693, whatever beta is",
             "Every log-ratio is 0, so every margin is 0, and -log sigmoid(0) = log 2. Beta multiplies 0. Both "
             "the kit's trainer and TRL's start there; section 9 checked it."),
            ("(1 / (2 beta))^2, the squared target",
             "That is IPO's first loss, (0 - 1/(2 beta))^2: 25 at beta 0.1. DPO's sigmoid loss starts at log 2."),
            ("It depends on beta: larger beta, larger loss",
             "Beta scales the margin, and at the start the margin is 0, so beta changes nothing yet. It sets how "
             "fast the loss falls once the margin grows."),
        ]),
        _q("During DPO training, what typically happens to the log-probability of the chosen responses?", 3, [
            ("It rises, since the loss rewards them",
             "The loss rewards the gap between chosen and rejected, not the chosen log-probability itself. Section 6 "
             "measured it on held-out pairs."),
            ("It stays put; only the rejected falls",
             "Nothing holds it in place: the loss sees only the difference of two log-ratios, and both move."),
            ("It rises as fast as the rejected falls",
             "That would widen the gap symmetrically, but nothing in the loss asks for symmetry, and the cheapest "
             "way to widen it is usually to lower both."),
            ("It falls too, less than the rejected one",
             "The loss asks only for a wider gap. Lowering both, the rejected faster, widens it while probability "
             "moves to responses in neither set. TRL logs logps/chosen for this reason."),
        ]),
        _q("IPO replaces -log sigmoid(beta h) by (h - 1/(2 beta))^2, h the log-ratio margin. What does it change?", 0, [
            ("The margin is pulled to a finite target",
             "Its slope is 0 at h = 1/(2 beta) and positive beyond, so an overshooting margin is pulled back. "
             "DPO's slope is negative at every h: it never stops asking for more."),
            ("The reference model is no longer needed",
             "h is still a difference of log-RATIOS against the reference; only the function of h changed."),
            ("A larger beta allows a larger margin",
             "The other way round: the target 1/(2 beta) shrinks as beta grows. As in DPO, a small beta lets the "
             "policy move further from the reference."),
            ("Noisily labelled pairs are skipped",
             "IPO does not detect noisy labels; every pair contributes. What it removes is the reward for "
             "pushing any pair's margin without end, which noisy labels make costly."),
        ]),
        _q("DPO trains no reward model. Can it still over-optimise?", 2, [
            ("No: with no proxy there is nothing to game",
             "The implicit reward beta log(pi / pi_ref) is a proxy too, fitted to the same few thousand noisy "
             "pairs as lab 03's reward model."),
            ("Only if beta is set to exactly 0",
             "Beta = 0 is not allowed at all (the derivation divides by it). Over-optimisation shows up at "
             "ordinary betas, with more training or a smaller beta."),
            ("Yes: its implicit reward is a proxy too",
             "Rafailov et al. (2024) found lab 05's picture for DPO and its relatives: KL keeps growing with "
             "training while gold quality stalls and falls. Section 8 looked for it in your runs."),
            ("Only when it trains on its own samples",
             "Offline DPO trains only on the SFT model's pairs and can still push its implicit reward past where "
             "it tracks the gold reward; sampling from the policy is not what causes it."),
        ]),
    ],
    "07": [
        _q("GRPO trains no value model. What stands in for the critic's baseline for each response?", 1, [
            ("The reward model's score of the prompt alone",
             "The reward model scores prompt + response; it never scores a prompt alone. The baseline comes from "
             "other responses to the same prompt."),
            ("The mean reward of the group it was sampled in",
             "GRPO samples group_size responses per prompt and subtracts their mean reward (dividing by their std): "
             "a baseline for that prompt, estimated from samples instead of predicted by a value model."),
            ("A running average of every reward seen so far",
             "That baseline mixes easy and hard prompts; GRPO's is per prompt, from the group of samples drawn "
             "for it in this very batch."),
            ("The SFT model's reward on the same prompt",
             "GRPO never asks the SFT model for a reward; the reference only enters through the KL term."),
        ]),
        _q("On a step's first minibatch your GRPO loss prints about 0. What does that tell you?", 3, [
            ("The policy has stopped learning",
             "A loss near 0 says nothing about the gradient. Section 4 plotted both: the loss sat near 0 while the "
             "gradient norm did not."),
            ("The reward model returns a constant",
             "That would make every advantage 0 and the gradient 0 too. Check zero_std_groups: it counts the "
             "groups whose rewards were all equal."),
            ("The learning rate is too small to matter",
             "The learning rate scales the step, not the loss value printed before the step is taken."),
            ("Nothing is wrong: its gradient is not zero",
             "The ratio is 1 on the first minibatch and each group's advantages sum to 0, so the loss is about "
             "-mean(A), near 0; its gradient sums A_i grad log pi(y_i), which is not."),
        ]),
        _q("All four samples of one prompt get the same score. What does GRPO learn from that group?", 0, [
            ("Nothing: their advantages are all zero",
             "Each reward minus the group mean is 0 (eps keeps 0 / 0 from being NaN), so those samples add "
             "nothing to the gradient. A batch of such groups is a wasted step."),
            ("To repeat them, since they scored well",
             "A high score does not help if every sample has it: the advantage is relative to the group, and all "
             "are equal."),
            ("To avoid them, since they did not differ",
             "A zero advantage pushes neither way; GRPO has no term that punishes a lack of variety."),
            ("A large update, since their std is near 0",
             "Dividing by a std near 0 would blow up a nonzero difference, but here every difference is 0, so "
             "with eps every advantage is exactly 0."),
        ]),
        _q("RLOO's baseline for sample i is the mean of the OTHER samples of its prompt. Why leave r_i out?", 2, [
            ("To make each group's advantages sum to one",
             "They sum to zero either way, with or without r_i in the baseline."),
            ("To save a forward pass per group",
             "Every sample is scored once either way; leaving one out is a subtraction, not a saving."),
            ("So the baseline does not depend on sample i",
             "A baseline independent of the sample keeps the gradient estimate unbiased; the plain group mean "
             "contains r_i and shrinks each advantage by (G - 1) / G."),
            ("Because r_i is usually an outlier",
             "Nothing singles out r_i: every sample in turn is left out of its own baseline."),
        ]),
        _q("GRPO against the verifier program raised the verifier's score. What can it NOT have rewarded?", 1, [
            ("Ending the review with punctuation",
             "The verifier checks the ending: one finished review ends with '.', '!' or '?'."),
            ("Writing in the requested sentiment",
             "The verifier checks format, topic and length; sentiment is the half of the instruction no rule "
             "here can check, so the policy is free to give it up. Section 5 measured whether it did."),
            ("Mentioning the requested genre",
             "The topic term checks that the genre and the subject are mentioned."),
            ("Staying between 5 and 50 words",
             "The length term checks exactly that range."),
        ]),
        _q("The AI judge is asked each question twice, with A and B swapped. Why?", 3, [
            ("To collect twice as many labels",
             "Both orders give one label for one pair: the two verdicts are averaged into one."),
            ("To check that the tokenizer reads both",
             "The tokenizer reads whatever it is given; the swap is about the judge's verdict, not about reading."),
            ("To average out sampling randomness",
             "Nothing is sampled: the verdict is read from the next-token probabilities of A and B, the same every "
             "time for the same text."),
            ("To cancel its liking for one position",
             "Small judges often prefer whichever answer comes first (or second). Averaging both orders cancels "
             "that; how often the verdict flips measures it."),
        ]),
    ],
    "08": [
        _q("Each policy answered every instruction several times. What should the bootstrap resample?", 2, [
            ("The individual answers, all pooled",
             "Answers to one instruction share its difficulty, so they are not independent tests: "
             "resampling answers treats them as if they were and makes the interval too narrow."),
            ("The judges that compared each pair of answers",
             "The judges are fixed and named; the uncertainty to estimate is which instructions happened to be "
             "asked."),
            ("The instructions, with all of their answers",
             "Instructions are the independent units: a new evaluation would ask new ones. Resampling them, answers "
             "and all, gives an interval that reflects how much the result depends on what was asked."),
            ("Nothing: many answers make it exact",
             "More answers per instruction shrink the noise within an instruction, not the spread between them."),
        ]),
        _q("The ratings are a Bradley-Terry fit to the pairwise verdicts. What is the same as in lab 03?", 0, [
            ("The loss: -log sigmoid(r_winner - r_loser)",
             "Lab 03 fitted one score per response, here one per policy; the model of a comparison and its loss "
             "are the same, and so is the 50% at equal scores."),
            ("The network that reads and scores the text",
             "Here each rating is one free number per policy, fitted directly; no network reads any text."),
            ("The data: the labeller's preference pairs",
             "Lab 03 fitted the candidate pairs of lab 02; here the matches are between policies' answers to the "
             "held-out instructions."),
            ("The anchor: the base model rated zero",
             "Only differences of ratings are identified, so one is pinned; the course pins SFT, not the base."),
        ]),
        _q("The reward model rates the beta = 0 policy above SFT, gold rates it below. What happened?", 3, [
            ("Gold reward is too noisy to trust here",
             "Gold is exact in this world; the error bars are about which instructions were asked, and the gap "
             "repeats over seeds (lab 05)."),
            ("The reward model was trained too briefly",
             "It scores SFT's own kind of answers well (lab 03); what fails is its verdict on answers far from "
             "anything it was trained on."),
            ("The simulated labeller disagreed with both judges",
             "The labeller follows gold about 73% of the time; it sided with gold here."),
            ("The policy found what the proxy overrates",
             "With no KL leash PPO moved to answers the reward model scores highly for the wrong reasons: lab 05's "
             "reward hacking, now visible as a disagreement between two judges."),
        ]),
        _q("A policy wins 60% against SFT, but writes twice as long answers. What does a length-controlled win rate "
           "estimate?", 1, [
            ("The win rate measured on its shortest answers only",
             "It keeps every comparison; it removes the part of the outcome that the length difference predicts."),
            ("Its win rate had both answers been equally long",
             "A logistic regression of the outcome on the length difference, read at a difference of zero: "
             "AlpacaEval 2's correction for judges that like longer answers."),
            ("The win rate per word of answer",
             "Dividing by length would punish long answers however good; the regression only removes what length "
             "alone explains."),
            ("The judge's agreement with a length rule",
             "That would measure the judge; the correction is applied to the policy's win rate."),
        ]),
        _q("Every policy was aligned from SFT. Why measure its loss on plain review pages?", 2, [
            ("To check that sampling stays fast",
             "The loss on pages measures predictions, not speed."),
            ("To recompute the reward model's scale",
             "The reward model is never evaluated on plain pages; its normalisation comes from SFT samples."),
            ("To see the alignment tax on pretraining skill",
             "Fine-tuning for instructions can make a model worse at what pretraining taught. InstructGPT measured "
             "it and cut it by mixing pretraining batches into PPO (PPO-ptx)."),
            ("To find which policy memorised the review pages",
             "The pages are new: no model has seen them, so the loss measures general skill, not memory."),
        ]),
    ],
    "09": [
        _q("LoRA's B matrix starts at zero. What does the model compute before the first update?", 2, [
            ("Random outputs until the adapters warm up",
             "A zero B makes the low-rank path output exactly zero; nothing random reaches the output."),
            ("Nothing: the frozen weights are skipped",
             "The frozen path x W^T always runs; LoRA only adds to it."),
            ("Exactly what the pretrained model computes",
             "(alpha / r) (x A^T) B^T is 0 when B = 0, so training starts from the pretrained model, and the "
             "adapters move it from there."),
            ("Half the pretrained output, half the adapter's",
             "The two paths are added, not averaged, and the adapter's path is 0 at the start."),
        ]),
        _q("Why does LoRA save memory during training, even though the forward pass reads every weight?", 0, [
            ("No gradients or Adam moments for frozen weights",
             "Full fine-tuning keeps a gradient and two AdamW moments per weight (three extra copies of the "
             "model); LoRA keeps them only for the adapters, a few percent of the numbers."),
            ("The frozen weights are kept in 4-bit integers instead",
             "That is QLoRA; plain LoRA keeps the frozen weights as they are (float32 here)."),
            ("The forward pass skips the frozen layers",
             "Every layer still runs forward and backward; the saving is in what is stored per weight."),
            ("Adapters replace the attention layers",
             "They sit beside the projections they adapt and add to them; nothing is replaced."),
        ]),
        _q("With LoRA, where does DPO get its frozen reference policy?", 3, [
            ("From a second copy of the model on disk",
             "No copy is needed: the frozen weights are the reference, as long as the adapters are off."),
            ("From the adapters' initial random values alone",
             "The adapters alone are not a policy; they only change the frozen model's output."),
            ("From the simulated labeller's choices",
             "The labeller chose the pairs; the reference is a policy whose log-probabilities DPO compares with."),
            ("The same model with its adapters switched off",
             "The frozen weights with the adapters off compute what the model computed before DPO, so the "
             "reference costs no memory at all (`lora.AdapterOff`)."),
        ]),
        _q("SmolLM2 is instruction-tuned already. Why did it still need SFT on the world's demonstrations?", 1, [
            ("Its weights were damaged by the GGUF conversion",
             "The GGUF file was dequantised to float32; the model writes fluent text before any tuning."),
            ("It follows instructions, but not this format",
             "It had never seen '### Response:' nor the gold reward's taste (one finished review, the topic, the "
             "sentiment); the demonstrations teach exactly that, as they did the toy model."),
            ("Its tokenizer cannot read the prompts",
             "Its tokenizer reads any text; the prompts reach it intact."),
            ("Instruction models cannot be used for RLHF",
             "They are the usual starting point of RLHF; they still need the task's own demonstrations."),
        ]),
    ],
}


def lab_quiz(lab: str) -> Quiz:
    """The self-check quiz of lab `lab` ("00", "01", ...)."""
    if lab not in QUIZZES:
        raise KeyError(f"No quiz for lab {lab!r}; labs with quizzes: {', '.join(QUIZZES)}.")
    return Quiz(QUIZZES[lab])
