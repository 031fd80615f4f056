"""The `dcrl` command line: one Typer app; each sub-command imports its room lazily."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

import dcrl
from dcrl.eval.cli import eval_command
from dcrl.report.cli import compare_command, report_command
from dcrl.theory.cli import app as theory_app  # its heavy imports are lazy

app = typer.Typer(
    name="dcrl",
    help="RL post-training of language models on verifiable rewards "
    "(GRPO, AEPO, DCPO, ICR and baselines).",
    no_args_is_help=True,
    add_completion=False,
)


app.add_typer(theory_app, name="theory")
app.command("eval")(eval_command)
app.command("report")(report_command)
app.command("compare")(compare_command)


def fail(error: BaseException) -> NoReturn:
    """Print `error` as one `error: ...` line on stderr and exit with status 2 (dcrl.errors)."""
    from dcrl.errors import one_line

    typer.secho(f"error: {one_line(error)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2) from None


@app.callback()
def main() -> None:
    """dcrl: GRPO, AEPO, DCPO, ICR and their baselines, with evaluation and reports."""


@app.command()
def version() -> None:
    """Print the dcrl version and the versions of its main dependencies."""
    import torch

    typer.echo(f"dcrl {dcrl.__version__} (torch {torch.__version__})")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
)
def train(
    ctx: typer.Context,
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML recipe: a file, or the name of a packaged recipe (see `dcrl recipes`).",
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the interrupted run in this directory."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved configuration and exit."
    ),
) -> None:
    """Post-train a causal LM with GRPO, AEPO, DCPO, ICR or a baseline.

    Extra arguments are overrides, e.g. `algorithm.target_entropy=0.3 train.steps=20`.
    """
    import yaml

    from dcrl.config import ConfigError, to_dict
    from dcrl.errors import UserError
    from dcrl.train.config import load_run_config
    from dcrl.train.recipes import resolve_config

    overrides = list(ctx.args)
    try:
        if resume is not None:
            if config is not None or overrides:
                raise ConfigError(
                    "--resume continues a run with its saved config; drop --config and overrides"
                )
            from dcrl.train.trainer import Trainer

            if print_config:
                typer.echo((resume / "config.yaml").read_text())
                return
            trainer = Trainer.from_run_dir(resume)
        else:
            run_config = load_run_config(resolve_config(config), overrides)
            if print_config:
                typer.echo(yaml.safe_dump(to_dict(run_config), sort_keys=False))
                return
            from dcrl.train.trainer import Trainer

            trainer = Trainer(run_config)
    except (UserError, FileNotFoundError, FileExistsError, ValueError) as err:
        fail(err)
    try:
        trainer.fit()
    except UserError as err:  # anything else is a bug in dcrl: keep its traceback
        fail(err)
    except Exception as err:  # a failed write of the logs (disk full) is not a bug
        from dcrl.train.disk import is_write_failure, write_failed

        if not is_write_failure(err):
            raise
        fail(write_failed(err, "the run's logs", trainer.run_dir, None, trainer._resume_hint()))
    typer.echo(f"run directory: {trainer.run_dir}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def pretrain(
    ctx: typer.Context,
    out: Path = typer.Option(
        Path(__file__).resolve().parent / "assets" / "tiny-arith",
        "--out",
        help="Where to save the checkpoint (default: the package's built-in tiny-arith).",
    ),
) -> None:
    """Pretrain the built-in tiny policy (how the shipped `tiny-arith` checkpoint was made).

    Supervised training on worked arithmetic solutions of mixed verbosity.

    Extra arguments override settings, e.g. `steps=300 level=3` (see dcrl.train.pretrain).
    """
    from dcrl.config import ConfigError, apply_overrides, build
    from dcrl.train.pretrain import PretrainConfig
    from dcrl.train.pretrain import pretrain as run_pretrain

    try:
        config = build(PretrainConfig, apply_overrides({}, list(ctx.args)))
    except ConfigError as err:
        fail(err)
    record = run_pretrain(config, out)
    typer.echo(
        f"saved {out}: loss {record['final_loss']:.3f}, held-out greedy accuracy "
        f"{record['greedy_accuracy']:.3f}, T=1 accuracy {record['sampled_accuracy']:.3f}"
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Directory of the runs and report."),
    steps: int | None = typer.Option(None, help="Steps per run (default: the recipes')."),
    seed: int = typer.Option(1, help="Seed of every run."),
    eval_problems: int = typer.Option(200, help="Held-out problems per evaluation."),
    eval_samples: int = typer.Option(16, help="Samples per held-out problem (avg@n, pass@k)."),
) -> None:
    """The embedded default: GRPO, AEPO, DCPO and ICR on the tiny policy, evaluated and drawn.

    Runs on a laptop CPU in minutes with nothing downloaded. Extra arguments override every
    run's config, e.g. `rollout.n=4`.
    """
    from dcrl.demo import DemoSettings, run_demo
    from dcrl.errors import UserError

    try:
        run_demo(
            DemoSettings(
                out_dir=out,
                steps=steps,
                seed=seed,
                eval_problems=eval_problems,
                eval_samples=eval_samples,
                overrides=tuple(ctx.args),
            )
        )
    except UserError as err:  # a bad override, a missing recipe; anything else keeps its traceback
        fail(err)


@app.command()
def recipes() -> None:
    """List the packaged recipes (`dcrl train -c NAME`) with the first line of their comment."""
    from dcrl.train.recipes import recipe_dir, recipe_names, summary

    names = recipe_names()
    width = max((len(name) for name in names), default=0)
    for name in names:
        typer.echo(f"{name:<{width}}  {summary(name)}")
    typer.echo(f"(files in {recipe_dir()}: copy one to change it, or override keys on the line)")


@app.command()
def algorithms() -> None:
    """List the registered algorithms with the first line of their description."""
    from dcrl.algorithms import ALGORITHMS, get_algorithm_class

    for name in sorted(ALGORITHMS):
        module = __import__(ALGORITHMS[name], fromlist=["ALGORITHM"])
        summary = (module.__doc__ or "").strip().splitlines()[0]
        get_algorithm_class(name)
        typer.echo(f"{name:<16} {summary}")


if __name__ == "__main__":
    app()
