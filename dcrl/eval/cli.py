"""`dcrl eval`: sample n answers per problem with one or several models, grade them, and write
per-sample records, a metrics JSON per model and a comparison table.

    dcrl eval --model runs/tiny-dcpo-seed1 --n 64                    # the run's own task, test split
    dcrl eval -m runs/tiny-grpo-seed1 -m runs/tiny-dcpo-seed1 --data arith:level=3 --n 64
    dcrl eval -m ~/models/Qwen2.5-Math-7B --data aime24.jsonl --n 32 --template chat \
        --max-new-tokens 8192 --backend vllm

The lead registers it in dcrl/cli.py as `app.command("eval")(eval_command)`.
"""

from __future__ import annotations

from pathlib import Path

import typer


def eval_command(
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="A model directory, a training run directory (its policy/ and, without --data, its "
        "task), 'tiny' or a cached hub id. Repeat to compare several.",
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        "-d",
        help="'arith' or 'arith:level=3' (the synthetic task's held-out test split), a .jsonl or "
        ".parquet file with problem/answer columns, or 'champ'. Default: the run's own task.",
    ),
    n: int = typer.Option(64, "--n", "-n", help="Samples per problem (pass@k for k up to n)."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Sampling temperature."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus threshold (1 = off)."),
    max_new_tokens: int | None = typer.Option(
        None,
        "--max-new-tokens",
        help="Response length cap. Default: the run's rollout.max_new_tokens, else 512.",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Evaluation seed (each call's seed derives from it)."
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        help="Evaluate the first LIMIT problems (synthetic tasks: how many to draw, default 200).",
    ),
    greedy: bool = typer.Option(False, "--greedy", help="Also decode one greedy answer each."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output directory (one model), or the parent of one sub-directory per model plus "
        "comparison.csv/.md (several). Default: RUN_DIR/eval-<data>-n<n>-t<T> for a run, "
        "evals/<model>-<data>-n<n>-t<T> otherwise.",
    ),
    template: str = typer.Option(
        "auto",
        "--template",
        help="Prompt template: auto, plain, boxed, chat, or '...{problem}...'.",
    ),
    reward: str = typer.Option(
        "auto", "--reward", help="Grader: auto, math, exact, numeric or 'package.module:function'."
    ),
    reward_timeout: float = typer.Option(
        5.0,
        "--reward-timeout",
        help="Seconds one call of a 'package.module:function' reward may take (> 0); past it "
        "the sample scores 0, and 3 in a row stop the evaluation.",
    ),
    problem_key: str = typer.Option("problem", "--problem-key", help="File column of problems."),
    answer_key: str = typer.Option("answer", "--answer-key", help="File column of answers."),
    id_key: str | None = typer.Option(None, "--id-key", help="File column of unique ids."),
    samples_per_call: int | None = typer.Option(
        None, "--samples-per-call", help="Samples of one problem per generate call (min(n, 64))."
    ),
    problems_per_call: int = typer.Option(
        1,
        "--problems-per-call",
        help="Problems per generate call; raise it on a GPU when n is small (changes the samples).",
    ),
    backend: str = typer.Option(
        "hf", "--backend", help="Generation backend: hf, vllm or 'package.module:Class'."
    ),
    decoding: str = typer.Option(
        "auto",
        "--decoding",
        help="As training's rollout.decoding: auto (dcrl's decoding loop on hf, the engine's own "
        "on vllm), loop or generate (hf). Recorded in settings.json.",
    ),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    save_responses: bool = typer.Option(
        True, "--save-responses/--no-save-responses", help="Keep response texts in samples.jsonl."
    ),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads; 0 keeps the default."),
    group_by: str | None = typer.Option(
        None,
        "--group-by",
        help="Also report the metrics per value of this problem meta key (e.g. kind).",
    ),
    strict_load: bool = typer.Option(
        True,
        "--strict-load/--no-strict-load",
        help="Refuse a model directory that is not a causal LM or whose weights miss layers of "
        "its architecture or hold others; --no-strict-load evaluates it anyway.",
    ),
) -> None:
    """Evaluate models: avg@n, unbiased pass@k, greedy accuracy, lengths, correlation.

    Interrupted evaluations resume from their records; several models give one comparison table.
    """
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dcrl.config import check_device
    from dcrl.errors import UserError, one_line
    from dcrl.eval.data import load_eval_data, read_run_config, run_label, safe_name
    from dcrl.eval.evaluator import METRICS_FILE, evaluate
    from dcrl.eval.table import EVAL_COLUMNS, eval_row, print_table, write_table

    try:
        check_device(device)
    except ValueError as error:
        typer.secho(f"error: --{error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    for flag, value, bad in (
        ("--max-new-tokens", max_new_tokens, max_new_tokens is not None and max_new_tokens < 1),
        ("--reward-timeout", reward_timeout, not 0 < reward_timeout <= 3600),
    ):
        if bad:
            typer.secho(
                f"error: {flag}={value} is out of range: give "
                + (
                    "a length ≥ 1 (or leave it out for the run's own)"
                    if flag == "--max-new-tokens"
                    else "seconds > 0 and ≤ 3600"
                ),
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(2)
    if threads > 0:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"

    rows = []
    labels: list[str] = []
    for model_spec in model:
        try:
            run_config = read_run_config(model_spec)
            fallback = Path(model_spec).name or model_spec
            label = run_label(run_config, fallback) if run_config else fallback
            if label in labels:
                label = f"{label}-{labels.count(label) + 1}"
            labels.append(label)
            eval_data = load_eval_data(
                data,
                run_config=run_config,
                limit=limit,
                problem_key=problem_key,
                answer_key=answer_key,
                id_key=id_key,
                template=template,
                reward=reward,
                reward_timeout_s=reward_timeout,
            )
            run_max_new_tokens = ((run_config or {}).get("rollout") or {}).get("max_new_tokens")
            max_tokens = max_new_tokens or run_max_new_tokens or 512
            folder = f"{eval_data.label}-n{n}-t{temperature:g}"
            if out is not None:
                out_dir = out if len(model) == 1 else out / safe_name(label)
            elif run_config is not None:
                out_dir = Path(model_spec) / f"eval-{folder}"
            else:
                out_dir = Path("evals") / f"{safe_name(label)}-{folder}"
            with Progress(
                TextColumn(f"[bold]{label}[/] on {eval_data.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=True,
            ) as progress:
                task_id = progress.add_task("eval", total=None)
                result = evaluate(
                    model_spec,
                    eval_data.problems,
                    eval_data.reward_fn,
                    n=n,
                    temperature=temperature,
                    top_p=top_p,
                    max_new_tokens=max_tokens,
                    seed=seed,
                    out_dir=out_dir,
                    template=eval_data.template,
                    greedy=greedy,
                    samples_per_call=samples_per_call,
                    problems_per_call=problems_per_call,
                    backend=backend,
                    decoding=decoding,
                    dtype=dtype,
                    device=device,
                    save_responses=save_responses,
                    model_label=label,
                    data_label=eval_data.label,
                    group_by=group_by,
                    strict_load=strict_load,
                    on_progress=lambda done, total, task_id=task_id: progress.update(
                        task_id, completed=done, total=total
                    ),
                )
        except (UserError, ValueError, TypeError, OSError, ImportError) as error:
            hint = (
                f"; {error.filename} cannot be written: give --out a writable directory (not a "
                "file)"
                if isinstance(error, OSError) and getattr(error, "filename", None)
                else ""
            )
            typer.secho(
                f"error ({model_spec}): {one_line(error)}{hint}", fg=typer.colors.RED, err=True
            )
            raise typer.Exit(2) from None
        typer.echo(f"{label}: {out_dir / METRICS_FILE}")
        rows.append(eval_row(label, result.metrics))

    print_table("dcrl eval", EVAL_COLUMNS, rows)
    if len(model) > 1:
        table_dir = out if out is not None else Path("evals")
        stem = "comparison" if out is not None else f"comparison-{rows[0]['data']}-n{n}"
        write_table(EVAL_COLUMNS, rows, table_dir / f"{stem}.csv", table_dir / f"{stem}.md")
        typer.echo(f"comparison table: {table_dir / stem}.csv, .md")
