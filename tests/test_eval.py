"""dcrl.eval: pass@k through the evaluator's aggregation equals enumeration over subsets; resuming an
interrupted evaluation gives the uninterrupted metrics without re-sampling; per-problem seeds; data
specs and their errors; the `dcrl eval` command on a run directory and on several models."""

from __future__ import annotations

import copy
import itertools
import json
import zlib
from pathlib import Path

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from dcrl.eval import EvalAccumulator, evaluate, load_eval_data, parse_data_spec
from dcrl.eval.cli import eval_command
from dcrl.eval.records import repair_records
from dcrl.models import build_tiny_model, save_tiny_model
from dcrl.rollout import HFRolloutBackend
from dcrl.tasks import Problem, get_task


def hashed_reward(completion: str, answer: str, **meta) -> float:
    """A deterministic reward a random model earns about a third of the time."""
    return float(zlib.crc32(completion.encode()) % 3 == 0)


def pass_at_k_by_enumeration(correct_per_problem: list[list[bool]], k: int) -> float:
    """Mean over problems of the fraction of k-subsets of its samples holding a correct one."""
    values = []
    for correct in correct_per_problem:
        subsets = list(itertools.combinations(correct, k))
        values.append(sum(any(subset) for subset in subsets) / len(subsets))
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def policy():
    return build_tiny_model(seed=0)


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return get_task("arith", level=1).problems("test", 4)


def run_eval(policy, problems, out_dir, reward=hashed_reward, **options):
    settings = dict(n=6, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=3, greedy=True)
    settings.update(options)
    return evaluate(policy, problems, reward, out_dir=out_dir, model_label="tiny", **settings)


def read_records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "samples.jsonl").read_text().splitlines()]


# -- aggregation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("num_samples", [1, 2, 5, 7])
def test_accumulator_pass_at_k_equals_subset_enumeration(num_samples):
    generator = torch.Generator().manual_seed(num_samples)
    correct = (torch.rand(5, num_samples, generator=generator) < 0.4).tolist()  # (P, n)
    correct[0] = [False] * num_samples  # an all-wrong and an all-right problem
    correct[1] = [True] * num_samples
    accumulator = EvalAccumulator([f"p{i}" for i in range(5)])
    for index, row in enumerate(correct):
        # added in two chunks, as the evaluator does with samples_per_call < n
        for chunk in (row[:3], row[3:]):
            if chunk:
                accumulator.add_samples(
                    f"p{index}", [float(c) for c in chunk], [4] * len(chunk), [False] * len(chunk)
                )
    metrics = accumulator.metrics(ks=list(range(1, num_samples + 1)))
    for k in range(1, num_samples + 1):
        assert metrics["pass@k"][str(k)] == pytest.approx(pass_at_k_by_enumeration(correct, k))
    flat = [c for row in correct for c in row]
    assert metrics[f"avg@{num_samples}"] == pytest.approx(sum(flat) / len(flat))


def test_accumulator_lengths_and_correlation_by_hand():
    accumulator = EvalAccumulator(["a", "b"])
    accumulator.add_samples("a", [1.0, 0.0], [10, 20], [False, True])
    accumulator.add_samples("b", [1.0, 1.0], [30, 40], [False, False])
    metrics = accumulator.metrics()
    assert metrics["pass@k"] == {"1": 0.75, "2": 1.0}
    length = metrics["length"]
    assert (length["mean"], length["correct_mean"], length["incorrect_mean"]) == (25.0, 80 / 3, 20)
    assert (length["correct_median"], length["truncated_frac"]) == (30.0, 0.25)
    # problem a: shorter is correct, corr = −1; problem b has no spread in correctness: 0
    assert metrics["length_accuracy_correlation"]["group"] == pytest.approx(-0.5, abs=1e-6)
    half_done = EvalAccumulator(["a", "b"])
    half_done.add_samples("a", [1.0], [10], [False])
    with pytest.raises(ValueError, match="incomplete"):
        half_done.metrics()


def test_accumulator_metrics_by_group_by_hand():
    grouped = EvalAccumulator(["a", "b", "c"], groups=["plain", "trap", "plain"], group_key="kind")
    plain = EvalAccumulator(["a", "b", "c"])
    for accumulator in (grouped, plain):
        accumulator.add_samples("a", [1.0, 0.0], [10, 20], [False, True])
        accumulator.add_samples("b", [0.0, 0.0], [30, 50], [True, False])
        accumulator.add_samples("c", [1.0, 1.0], [6, 8], [False, False])
        for problem_id, reward in (("a", 1.0), ("b", 0.0), ("c", 0.0)):
            accumulator.add_greedy(problem_id, reward, 5)
    metrics = grouped.metrics()
    by_group = metrics.pop("by_group")
    assert metrics == plain.metrics()  # the overall numbers do not change
    assert by_group["key"] == "kind" and list(by_group["groups"]) == ["plain", "trap"]
    kinds = by_group["groups"]
    # plain: a (1 of 2 correct) and c (2 of 2): avg 3/4, pass@2 = (1 + 1)/2
    assert (kinds["plain"]["num_problems"], kinds["plain"]["avg@2"]) == (2, 0.75)
    assert kinds["plain"]["pass@k"] == {"1": 0.75, "2": 1.0}
    assert kinds["plain"]["reward_mean"] == 0.75
    assert kinds["plain"]["length"]["mean"] == (10 + 20 + 6 + 8) / 4
    assert kinds["plain"]["length"]["truncated_frac"] == 0.25
    assert kinds["plain"]["greedy_accuracy"] == 0.5
    # a: the shorter answer is correct (corr −1); c: no spread in correctness (0)
    assert kinds["plain"]["length_accuracy_correlation"]["group"] == pytest.approx(-0.5, abs=1e-6)
    # trap: b, never correct
    assert kinds["trap"]["pass@k"] == {"1": 0.0, "2": 0.0} and kinds["trap"]["avg@2"] == 0.0
    assert (
        kinds["trap"]["length"]["mean"] == 40.0 and kinds["trap"]["length"]["correct_mean"] is None
    )
    assert kinds["trap"]["greedy_accuracy"] == 0.0
    with pytest.raises(ValueError, match="one each"):
        EvalAccumulator(["a", "b"], groups=["plain"])


# -- evaluate ----------------------------------------------------------------------------------
def test_evaluate_metrics_match_its_records(policy, problems, tmp_path):
    result = run_eval(policy, problems, tmp_path, samples_per_call=4)
    records = read_records(tmp_path)
    samples = [r for r in records if r["kind"] == "sample"]
    assert len(samples) == 4 * 6 and sum(r["kind"] == "greedy" for r in records) == 4
    correct = [
        [
            r["correct"]
            for r in sorted(samples, key=lambda r: r["sample"])
            if r["problem_id"] == p.id
        ]
        for p in problems
    ]
    assert all(len(row) == 6 for row in correct)
    assert 0 < sum(map(sum, correct)) < 24, "the test reward should give mixed correctness"
    for k in (1, 2, 4, 6):
        assert result.metrics["pass@k"][str(k)] == pytest.approx(
            pass_at_k_by_enumeration(correct, k)
        )
    assert list(result.metrics["pass@k"]) == ["1", "2", "4", "6"]
    lengths = [r["length"] for r in samples]
    assert result.metrics["length"]["mean"] == pytest.approx(sum(lengths) / len(lengths))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["settings"]["temperature"] == 1.0 and saved["settings"]["n"] == 6
    assert saved["avg@6"] == result.metrics["avg@6"]
    per_problem = [json.loads(line) for line in (tmp_path / "per_problem.jsonl").open()]
    assert [row["num_correct"] for row in per_problem] == [sum(row) for row in correct]


def test_evaluate_groups_by_a_meta_key(policy, problems, tmp_path):
    labeled = [
        Problem(p.prompt, p.answer, p.id, {**p.meta, "kind": ("plain", "trap")[i % 2]})
        for i, p in enumerate(problems)
    ]
    result = run_eval(policy, labeled, tmp_path, group_by="kind")
    samples = [r for r in read_records(tmp_path) if r["kind"] == "sample"]
    groups = result.metrics["by_group"]["groups"]
    for label, members in (("plain", labeled[0::2]), ("trap", labeled[1::2])):
        correct = [[r["correct"] for r in samples if r["problem_id"] == p.id] for p in members]
        assert groups[label]["num_problems"] == len(members)
        assert groups[label]["pass@k"]["2"] == pytest.approx(pass_at_k_by_enumeration(correct, 2))
        flat = [c for row in correct for c in row]
        assert groups[label]["avg@6"] == pytest.approx(sum(flat) / len(flat))
    assert json.loads((tmp_path / "metrics.json").read_text())["by_group"]["key"] == "kind"
    with pytest.raises(ValueError, match="no meta"):
        run_eval(policy, problems, tmp_path / "unlabeled", group_by="kind")


@pytest.mark.slow
def test_interrupted_evaluation_resumes_to_the_same_metrics(policy, problems, tmp_path):
    whole = run_eval(policy, problems, tmp_path / "whole", samples_per_call=4)

    class InterruptedBackend(HFRolloutBackend):
        calls = 0

        def generate(self, *args, **kwargs):
            InterruptedBackend.calls += 1
            if InterruptedBackend.calls == 7:  # in the middle of the third problem
                raise KeyboardInterrupt
            return super().generate(*args, **kwargs)

    resumed_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_eval(
            InterruptedBackend(*policy, decoding="loop"), problems, resumed_dir, samples_per_call=4
        )
    written = read_records(resumed_dir)
    assert 0 < len(written) < 28
    with (resumed_dir / "samples.jsonl").open("a") as records:
        records.write('{"problem_id": "arith-te')  # a line cut off by the interruption
    resumed = run_eval(policy, problems, resumed_dir, samples_per_call=4)

    assert resumed.metrics["throughput"]["resumed_samples"] == len(written)
    assert resumed.metrics["throughput"]["generated_samples"] == 28 - len(written)
    strip = lambda metrics: {k: v for k, v in metrics.items() if k != "throughput"}  # noqa: E731
    assert strip(resumed.metrics) == strip(whole.metrics)
    key = lambda r: (r["problem_id"], r["kind"], r["sample"])  # noqa: E731
    assert sorted(read_records(resumed_dir), key=key) == sorted(
        read_records(tmp_path / "whole"), key=key
    )

    again = run_eval(policy, problems, resumed_dir, samples_per_call=4)  # nothing left to do
    assert again.metrics["throughput"]["generated_samples"] == 0
    assert strip(again.metrics) == strip(whole.metrics)


def test_repair_drops_incomplete_units(tmp_path):
    path = tmp_path / "samples.jsonl"
    records = [
        {"problem_id": "a", "kind": "sample", "sample": s, "reward": 1.0, "length": 3}
        for s in range(4)
    ] + [{"problem_id": "b", "kind": "sample", "sample": 0, "reward": 0.0, "length": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    complete = repair_records(path, num_samples=4, samples_per_call=2)
    assert complete == {("sample", "a", 0), ("sample", "a", 1)}
    assert [json.loads(line)["problem_id"] for line in path.open()] == ["a"] * 4


def test_samples_depend_only_on_the_problem_and_seed(policy, problems, tmp_path):
    full = run_eval(policy, problems, tmp_path / "full")
    subset = run_eval(policy, problems[2:], tmp_path / "subset")
    by_key = lambda rows: {(r["problem_id"], r["kind"], r["sample"]): r for r in rows}  # noqa: E731
    full_records = by_key(read_records(tmp_path / "full"))
    for key, record in by_key(read_records(tmp_path / "subset")).items():
        assert full_records[key] == record
    assert subset.per_problem == full.per_problem[2:]
    other_seed = run_eval(policy, problems[2:], tmp_path / "other", seed=4)
    assert [r["response"] for r in read_records(tmp_path / "other")] != [
        r["response"] for r in read_records(tmp_path / "subset")
    ]
    assert other_seed.metrics["settings"]["seed"] == 4


def test_large_n_streams_in_chunks(policy, problems, tmp_path):
    result = run_eval(
        policy,
        problems[:1],
        tmp_path,
        n=1024,
        max_new_tokens=1,
        greedy=False,
        samples_per_call=256,
        save_responses=False,
    )
    assert result.metrics["pass@k"].keys() == {str(2**p) for p in range(11)}
    records = read_records(tmp_path)
    assert sorted(r["sample"] for r in records) == list(range(1024))
    assert "response" not in records[0]
    correct = sum(r["correct"] for r in records)
    assert result.metrics["avg@1024"] == correct / 1024


def test_changed_settings_refuse_to_resume(policy, problems, tmp_path):
    run_eval(policy, problems[:1], tmp_path, n=2)
    with pytest.raises(ValueError, match=r"temperature: 1\.0 -> 0\.5.*--out"):
        run_eval(policy, problems[:1], tmp_path, n=2, temperature=0.5)


def test_changed_weights_refuse_to_resume(policy, problems, tmp_path):
    """Records are keyed on the weights evaluated, not on the path they were read from."""
    model_dir = tmp_path / "model"
    save_tiny_model(*policy, model_dir)
    out = tmp_path / "eval"
    first = run_eval(str(model_dir), problems[:1], out, n=2)
    assert first.metrics["settings"]["weights_sha256"]
    again = run_eval(str(model_dir), problems[:1], out, n=2)  # same weights: resumes
    assert again.metrics["throughput"]["generated_samples"] == 0

    save_tiny_model(*build_tiny_model(seed=1), model_dir)  # same path, other weights
    with pytest.raises(
        ValueError, match=r"other weights: the weights of tiny changed since.*--out"
    ):
        run_eval(str(model_dir), problems[:1], out, n=2)

    model, tokenizer = copy.deepcopy(policy[0]), policy[1]  # a model in memory, changed in place
    memory_out = tmp_path / "memory"
    run_eval((model, tokenizer), problems[:1], memory_out, n=2)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="other weights"):
        run_eval((model, tokenizer), problems[:1], memory_out, n=2)


def test_bad_arguments(policy, problems, tmp_path):
    with pytest.raises(ValueError, match="n .samples per problem"):
        evaluate(policy, problems, hashed_reward, n=0)
    with pytest.raises(ValueError, match="problems is empty"):
        evaluate(policy, [], hashed_reward, n=2)
    with pytest.raises(ValueError, match="top_p"):
        evaluate(policy, problems, hashed_reward, n=2, top_p=0.0, out_dir=tmp_path)
    assert not any(tmp_path.iterdir()), "a rejected call must leave nothing to resume"


# -- data --------------------------------------------------------------------------------------
def test_data_specs():
    assert parse_data_spec("arith:level=[2,3],seed=1") == ("arith", {"level": [2, 3], "seed": 1})
    data = load_eval_data("arith:level=3", limit=7)
    assert len(data.problems) == 7 and data.label == "arith-level3-test7"
    assert all(p.id.startswith("arith-test") for p in data.problems)
    assert data.template == "plain"
    assert data.reward_fn(data.problems[0].solution, data.problems[0].answer) == 1.0
    with pytest.raises(ValueError, match="neither a synthetic task"):
        load_eval_data("aime24")
    with pytest.raises(ValueError, match="key=value"):
        load_eval_data("arith:level")
    with pytest.raises(ValueError, match="pass --data"):
        load_eval_data(None)


def test_data_file_format_and_errors(tmp_path):
    good = tmp_path / "math.jsonl"
    good.write_text('{"problem": "1+1?", "answer": 2}\n{"problem": "2+2?", "answer": "4"}\n')
    data = load_eval_data(str(good))
    assert [p.answer for p in data.problems] == ["2", "4"]
    assert (data.template, data.label) == ("boxed", "math")
    assert data.reward_fn("so \\boxed{2}", "2") == 1.0
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text('{"problem": "1+1?", "solution": "2"}\n')
    with pytest.raises(ValueError, match=r"missing field 'answer'.*answer_key"):
        load_eval_data(str(no_answer))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_eval_data(str(tmp_path / "missing.jsonl"))


def test_champ_needs_its_package():
    pytest.importorskip("dcrl")  # champ-dataset is optional; check the message when it is absent
    try:
        import champ_dataset  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install champ-dataset"):
            load_eval_data("champ")
    else:
        assert len(load_eval_data("champ", limit=3).problems) == 3


# -- the command -------------------------------------------------------------------------------
@pytest.fixture
def eval_app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)  # two commands, so "eval" stays a sub-command
    return app


def make_run_dir(root: Path, policy, seed: int, task: str = "arith") -> Path:
    run_dir = root / f"grpo-seed{seed}"
    run_dir.mkdir(parents=True)
    config = {
        "model": {"name": "tiny", "dtype": "float32"},
        "data": {"task": task, "task_options": {"level": 1}, "template": "auto", "reward": "auto"},
        "rollout": {"max_new_tokens": 5},
        "train": {"seed": seed},
        "algorithm": {"name": "grpo"},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    save_tiny_model(*policy, run_dir / "policy")
    return run_dir


def test_eval_command_on_run_directories(eval_app, policy, tmp_path):
    runs = [make_run_dir(tmp_path, policy, seed) for seed in (1, 2)]
    result = CliRunner().invoke(
        eval_app,
        ["eval", "-m", str(runs[0]), "-m", str(runs[1]), "--n", "2", "--limit", "3",
         "--out", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "cmp" / "comparison.csv").read_text().splitlines()
    assert rows[0].startswith("model,data,problems,n")
    assert [row.split(",")[:4] for row in rows[1:]] == [
        ["grpo-seed1", "arith-level1-test3", "3", "2"],
        ["grpo-seed2", "arith-level1-test3", "3", "2"],
    ]
    metrics = json.loads((tmp_path / "cmp" / "grpo-seed1" / "metrics.json").read_text())
    assert metrics["settings"]["max_new_tokens"] == 5  # the run's rollout.max_new_tokens
    assert metrics["settings"]["model"] == "grpo-seed1"

    default_dir = CliRunner().invoke(
        eval_app, ["eval", "-m", str(runs[0]), "--n", "1", "--limit", "2"]
    )
    assert default_dir.exit_code == 0, default_dir.output
    assert (runs[0] / "eval-arith-level1-test2-n1-t1" / "metrics.json").is_file()


def test_eval_command_errors(eval_app, policy, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text(yaml.safe_dump({"algorithm": {"name": "grpo"}}))
    result = CliRunner().invoke(eval_app, ["eval", "-m", str(unfinished), "--data", "arith"])
    assert result.exit_code == 2
    assert "without a final policy" in result.output

    file_run = make_run_dir(tmp_path, policy, seed=3, task="file")
    result = CliRunner().invoke(eval_app, ["eval", "-m", str(file_run)])
    assert result.exit_code == 2 and "held-out" in result.output
