"""dcrl: reinforcement-learning post-training of language models on verifiable rewards.

GRPO and the target-distribution regularizers of one research line — AEPO (arXiv 2510.08141),
DCPO (arXiv 2601.12730), ICR (arXiv 2605.07316) — plus their baselines, evaluation, reports, and a
simulator of the RLHF generalization theory of arXiv 2601.16403.

`dcrl.core` holds the algorithms as plain tensor functions that any engine (dcrl's own trainer,
verl, TRL) can call.
"""

__version__ = "0.1.0"
