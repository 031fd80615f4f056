"""dcrl's own trainer, one module per concern. `trainer` is the loop and the update; everything
else it uses lives in the module that owns it:

    trainer       `Trainer`: the run's set-up, then the loop: rollout → task scores →
                  `step.prepare` → the PPO update → `step.after_update` → metrics → checkpoint.
    step          the step protocol shared with the TRL and verl adapters (prepare, the entropy
                  signals, after_update, what the targets do).
    data          the run's problems, prompt template and reward function (`load_data`), the
                  prompts checked against the model, and their resumable order (ProblemSampler).
    batches       row chunks, length-sorted micro-batches and padding trimmed from a TrainBatch.
    forward       the policy's forward pass reduced to response log-probs and entropy, and the
                  no-grad log-prob pass over a batch in chunks (`logprob_pass`).
    optimizer     AdamW over the trainable weights and its warm-up.
    tally         the update's numbers summed over micro- and mini-batches.
    checkpoint    atomic checkpoints, the one lookup of the latest (`latest_checkpoint`), and
                  the error of a failed save.
    resume_check  a checkpoint read whole and checked before a resume uses it.
    disk          failed writes, the space a checkpoint needs, the run directory's config.yaml
                  and the atomic policy export.
    memory        a part of a step that does not fit in memory (the rollout, the log-prob pass,
                  a micro-batch, the optimizer step), and the setting to lower.
    run_lock      one writer per run directory.
    sinks         where step metrics go (metrics.jsonl, TensorBoard, wandb, the console).
    config        the run config (`RunConfig`) and its YAML; recipes: the shipped ones by name.
    pretrain      the supervised pretraining of the built-in tiny policies the CPU recipes use.

Words with one meaning each: a response's *score* is the task's grade of it (the run's reward
function: the task's verifier or data.reward), before any target shapes it into the *rewards*
the base estimator normalizes into advantages; the *log-prob pass* scores nothing: it computes
the responses' log-probs (and entropy) under the current policy, without gradients.

Importing this package imports none of its modules: `from dcrl.train import step` and
`dcrl.train.trainer` load what they name.
"""
