"""Evaluation: sample n answers per problem, grade them, and report avg@n, unbiased pass@k,
greedy accuracy, response lengths and the length–accuracy correlation (`dcrl eval`).

    from dcrl.eval import evaluate, load_eval_data
    data = load_eval_data("arith:level=3", limit=100)
    result = evaluate("runs/tiny-dcpo-seed1", data.problems, data.reward_fn, n=64,
                      temperature=1.0, top_p=1.0, max_new_tokens=64, seed=0,
                      template=data.template, out_dir="runs/tiny-dcpo-seed1/eval-arith3")
    result.metrics["avg@64"], result.metrics["pass@k"]["64"]

Names are imported on first use, so `import dcrl.eval.cli` (the CLI) stays cheap.
"""

from __future__ import annotations

from dcrl._lazy import lazy_exports

_EXPORTS = {
    "EvalData": "dcrl.eval.data",
    "load_champ": "dcrl.eval.data",
    "load_eval_data": "dcrl.eval.data",
    "parse_data_spec": "dcrl.eval.data",
    "read_run_config": "dcrl.eval.data",
    "EvalResult": "dcrl.eval.evaluator",
    "call_seed": "dcrl.eval.evaluator",
    "evaluate": "dcrl.eval.evaluator",
    "policy_directory": "dcrl.eval.evaluator",
    "EvalAccumulator": "dcrl.eval.metrics",
    "default_pass_at_k_values": "dcrl.eval.metrics",
    "EVAL_COLUMNS": "dcrl.eval.table",
    "eval_row": "dcrl.eval.table",
    "print_table": "dcrl.eval.table",
    "write_table": "dcrl.eval.table",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
