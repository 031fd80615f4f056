"""The exploration testbed's checkpoint against its pre-RL gates, at full size.

    python bench/testbed_gates.py                    # tiny-explore, 256 prompts x 16 samples
    python bench/testbed_gates.py --model runs/explore-grpo-seed1/policy --prompts 96 \
        --temperatures 1 --out runs/explore-grpo-seed1/profile     # a trained policy's profile

Samples the policy on training and held-out problems of the `explore` task at T = 1, 1.5 and 2
and writes bench/results/explore/gates.json (the profile: accuracy per kind, strategy shares,
pass@16, mixed groups, checks, entropy at the fork) and gates.md (the gates, met or not).
docs/testbed.md explains the gates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-explore")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--temperatures", type=float, nargs="+", default=[1.0, 1.5, 2.0], help="T = 1 first"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "explore")
    args = parser.parse_args(argv)

    import torch

    from dcrl.eval.gates import pretraining_gates, profile_testbed
    from dcrl.models import load_policy
    from dcrl.tasks import get_task

    torch.set_num_threads(args.threads)
    model, tokenizer = load_policy(args.model)
    options = {}
    record_path = Path(args.model) / "pretrain.json"
    if args.model == "tiny-explore":
        record_path = REPO / "dcrl" / "assets" / "tiny-explore" / "pretrain.json"
    if record_path.is_file():
        from dcrl.train.pretrain import PretrainConfig, task_options

        settings = json.loads(record_path.read_text())["settings"]
        options = task_options(PretrainConfig(**settings))
    task = get_task("explore", seed=args.seed, **options)
    profile = profile_testbed(
        model,
        tokenizer,
        task,
        prompts=args.prompts,
        samples=args.samples,
        temperatures=args.temperatures,
        seed=args.seed,
    )
    gates = pretraining_gates(profile)
    command = "python bench/testbed_gates.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"command": command.strip(), "model": args.model, "profile": profile, "gates": gates}
    (args.out / "gates.json").write_text(json.dumps(record, indent=1))
    lines = [f"<!-- made by: {record['command']} -->", "", "| gate | goal | value | met |"]
    lines.append("|---|---|---|---|")
    for row in gates:
        value = row["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(
            f"| {row['gate']} | {row['goal']} | {shown} | {'yes' if row['met'] else 'no'} |"
        )
    (args.out / "gates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(row["met"] for row in gates) else 1


if __name__ == "__main__":
    sys.exit(main())
