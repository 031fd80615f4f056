"""The `dcrl` command line: one Typer app; each sub-command imports its room lazily."""

from __future__ import annotations

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


if __name__ == "__main__":
    app()
