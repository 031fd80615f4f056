"""The `dcrl` command line: one Typer app; each sub-command imports its room lazily."""

from __future__ import annotations

from pathlib import Path

import typer

import dcrl

app = typer.Typer(
    name="dcrl",
    help="RL post-training of language models on verifiable rewards "
    "(GRPO, AEPO, DCPO, ICR and baselines).",
    no_args_is_help=True,
    add_completion=False,
)


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
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML recipe (see configs/)."),
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
    from dcrl.train.config import load_run_config

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
            run_config = load_run_config(config, overrides)
            if print_config:
                typer.echo(yaml.safe_dump(to_dict(run_config), sort_keys=False))
                return
            from dcrl.train.trainer import Trainer

            trainer = Trainer(run_config)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    trainer.fit()
    typer.echo(f"run directory: {trainer.run_dir}")


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
