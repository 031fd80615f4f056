"""dcrl.report: the report of the fixture runs holds every figure embedded in one self-contained
HTML page; missing metrics skip their figure; runs are labelled and grouped by setting; seed bands,
final values, the Pareto frontier and smoothing by hand; clear errors for bad run directories;
`dcrl report` and `dcrl compare`."""

from __future__ import annotations

import base64
import csv
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from dcrl.report import build_report, load_runs, report_figures, summary_table
from dcrl.report.cli import compare_command, report_command
from dcrl.report.figures import pareto_frontier, smooth_values

FIXTURE = Path(__file__).parent / "data" / "report_fixture"
FIGURE_IDS = {"entropy", "control", "accuracy", "length", "correlation", "pass_at_k", "pareto"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PageParser(HTMLParser):
    """Collects the embedded figures, the skipped ones and every resource address of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, bytes] = {}
        self.skipped: set[str] = set()
        self.addresses: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.add(tag)
        self.addresses += [attributes[a] for a in ("src", "href") if a in attributes]
        if tag == "img" and "data-figure" in attributes:
            prefix = "data:image/png;base64,"
            assert attributes["src"].startswith(prefix)
            self.figures[attributes["data-figure"]] = base64.b64decode(
                attributes["src"][len(prefix) :]
            )
        if "data-skipped" in attributes:
            self.skipped.add(attributes["data-skipped"])


def parse_page(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def copy_runs(names: list[str], destination: Path, keep_evals: bool = True) -> list[Path]:
    copies = []
    for name in names:
        copy = destination / name
        shutil.copytree(FIXTURE / name, copy)
        if not keep_evals:
            for eval_dir in copy.glob("eval*"):
                shutil.rmtree(eval_dir)
        copies.append(copy)
    return copies


@pytest.mark.slow
def test_report_of_the_fixture_embeds_every_figure(tmp_path):
    report_path = build_report([FIXTURE], tmp_path / "report")
    page = parse_page(report_path)
    assert set(page.figures) == FIGURE_IDS and not page.skipped
    for figure_id, png in page.figures.items():
        assert png.startswith(PNG_MAGIC)
        assert (tmp_path / "report" / "figures" / f"{figure_id}.png").read_bytes() == png
        assert len(png) < 200_000
    assert all(address.startswith("data:") for address in page.addresses)  # nothing fetched
    assert not page.tags & {"script", "link", "iframe"}
    with (tmp_path / "report" / "summary.csv").open() as handle:
        assert [row["run"] for row in csv.DictReader(handle)] == [
            "aepo seed1", "dcpo seed1", "dcpo seed2", "grpo seed1", "grpo seed2",
        ]  # fmt: skip
    by_setting = (tmp_path / "report" / "summary_by_setting.md").read_text()
    assert "| dcpo | 2 |" in by_setting and "±" in by_setting


@pytest.mark.slow
def test_missing_metrics_skip_their_figures(tmp_path):
    runs = copy_runs(["grpo-seed1", "grpo-seed2"], tmp_path, keep_evals=False)
    page = parse_page(build_report(runs, tmp_path / "report"))
    assert page.skipped == {"control", "pass_at_k"}
    assert set(page.figures) == FIGURE_IDS - {"control", "pass_at_k"}
    columns, _ = summary_table(load_runs(runs))
    assert {key for key, _ in columns}.isdisjoint({"temperature", "eval_avg", "eval_pass_at_1"})
    pareto = next(f for f in report_figures(load_runs(runs)) if f.id == "pareto")
    assert "training" in pareto.figure.axes[0].get_title()


def test_runs_are_labelled_by_algorithm_and_seed_and_grouped_by_setting(tmp_path):
    runs = copy_runs(["dcpo-seed1", "dcpo-seed2", "grpo-seed1"], tmp_path)
    hotter = tmp_path / "dcpo-target05-seed1"
    shutil.copytree(runs[0], hotter)
    config = yaml.safe_load((hotter / "config.yaml").read_text())
    config["algorithm"]["target_entropy"] = 0.5
    config["log"]["output_dir"] = "elsewhere"  # logging is not part of the setting
    (hotter / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_runs([*runs, hotter])
    assert [run.label for run in loaded] == [
        "dcpo (target_entropy=0.3) seed1",
        "dcpo (target_entropy=0.3) seed2",
        "grpo seed1",
        "dcpo (target_entropy=0.5) seed1",
    ]
    assert len({run.group for run in loaded}) == 3


def test_settings_that_differ_past_three_keys_keep_their_own_groups(tmp_path):
    """Five dcpo settings: three targets under one setup and two under another (alpha_cap,
    center_rho and controller change together). The label names the keys that tell them apart
    (the target first: it splits them most), never pools two settings into one group as the
    first three differing keys alone (the setup's) would."""
    (base,) = copy_runs(["dcpo-seed1"], tmp_path)
    setups = [(False, 0.3), (False, 0.4), (False, 0.5), (True, 0.3), (True, 0.5)]
    dirs = []
    for index, (other, target) in enumerate(setups):
        run = tmp_path / f"run{index}"
        shutil.copytree(base, run)
        config = yaml.safe_load((run / "config.yaml").read_text())
        algorithm = config["algorithm"]
        algorithm["center_rho"] = other
        algorithm["alpha_cap"] = 0.2 if other else 0.1
        algorithm["controller"] = "bang_bang" if other else "pi"
        algorithm["target_entropy"] = target
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        dirs.append(run)
    loaded = load_runs(dirs)
    assert len({run.group for run in loaded}) == 5
    assert loaded[0].group == "dcpo (target_entropy=0.3, alpha_cap=0.1)"
    assert loaded[4].group == "dcpo (target_entropy=0.5, alpha_cap=0.2)"


def test_a_run_saved_before_a_setting_existed_groups_with_runs_at_its_default(tmp_path):
    """A dcpo run whose config.yaml lacks `algorithm.center_rho` (saved before the option
    existed) ran with its default (false): it is a seed of the same setting as a run that
    wrote center_rho: false, and apart from one that set it true."""
    older, newer, other = copy_runs(["dcpo-seed1", "dcpo-seed2"], tmp_path) + [tmp_path / "x"]
    shutil.copytree(newer, other)
    for run, value in ((older, None), (newer, False), (other, True)):
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["algorithm"].pop("center_rho", None)
        if value is not None:
            config["algorithm"]["center_rho"] = value
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_runs([older, newer, other])
    assert loaded[0].group == loaded[1].group == "dcpo (center_rho=False)"
    assert loaded[2].group == "dcpo (center_rho=True)"


def test_a_mapping_setting_at_its_empty_default_groups_with_a_run_saved_before_it_existed(
    tmp_path,
):
    older, newer = copy_runs(["dcpo-seed1", "dcpo-seed2"], tmp_path)
    config = yaml.safe_load((newer / "config.yaml").read_text())
    config["rollout"]["backend_options"] = {}  # a setting added later, at its default
    (newer / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_runs([older, newer])
    assert [run.label for run in loaded] == ["dcpo seed1", "dcpo seed2"]
    config["rollout"]["backend_options"] = {"add_special_tokens": False}  # a real difference
    (newer / "config.yaml").write_text(yaml.safe_dump(config))
    assert len({run.group for run in load_runs([older, newer])}) == 2


@pytest.mark.slow
def test_curves_are_the_mean_over_seeds_with_a_min_max_band():
    runs = load_runs([FIXTURE / "grpo-seed1", FIXTURE / "grpo-seed2"])
    accuracy = next(f for f in report_figures(runs) if f.id == "accuracy").figure
    line = accuracy.axes[0].get_lines()[0]
    expected = (runs[0].metrics["reward/accuracy"] + runs[1].metrics["reward/accuracy"]) / 2
    np.testing.assert_allclose(line.get_ydata(), expected)
    np.testing.assert_array_equal(line.get_xdata(), runs[0].steps)
    band = accuracy.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    low = np.minimum(runs[0].metrics["reward/accuracy"], runs[1].metrics["reward/accuracy"])
    assert np.isclose(band.min(), low.min())


def test_summary_final_values_average_the_last_tenth_of_steps():
    runs = load_runs([FIXTURE / "dcpo-seed1", FIXTURE / "dcpo-seed2"])
    columns, rows = summary_table(runs)
    accuracy = [run.metrics["reward/accuracy"][-2:].mean() for run in runs]  # 10% of 20 steps
    assert [row["accuracy"] for row in rows] == pytest.approx(accuracy)
    evaluation = runs[0].evals["eval-arith-level2-test40-n16-t1"]
    assert rows[0]["eval_avg"] == evaluation["avg@16"]
    assert rows[0]["eval_pass_at_n"] == evaluation["pass@k"]["16"]
    _, group_rows = summary_table(runs, by_group=True)
    assert group_rows[0]["seeds"] == 2
    assert group_rows[0]["accuracy"] == (f"{np.mean(accuracy):.3f} ± {np.std(accuracy):.3f}")


def test_summary_tracking_error_is_the_second_half_rms_relative_to_the_target():
    runs = load_runs([FIXTURE / "dcpo-seed1", FIXTURE / "grpo-seed1"])
    columns, rows = summary_table(runs)
    records = [
        json.loads(line)
        for line in (FIXTURE / "dcpo-seed1" / "metrics.jsonl").read_text().splitlines()
    ]
    second = records[len(records) // 2 :]  # 20 steps: steps 11-20
    errors = [r["entropy/sampled_nll"] / r["entropy/target"] - 1 for r in second]
    expected = math.sqrt(sum(e * e for e in errors) / len(errors))
    assert rows[0]["tracking_error"] == pytest.approx(expected, rel=1e-12)
    assert rows[0]["entropy_target"] == pytest.approx(0.3)
    assert rows[1]["tracking_error"] is None  # GRPO holds no target
    assert ("tracking_error", "H RMS err") in columns
    # Without any controlled run the columns are left out.
    grpo_columns, _ = summary_table(load_runs([FIXTURE / "grpo-seed1"]))
    assert not {"tracking_error", "entropy_target"} & {key for key, _ in grpo_columns}


def test_pareto_frontier_and_smoothing_by_hand():
    points = [(30.0, 0.5), (40.0, 0.6), (35.0, 0.4), (50.0, 0.6), (30.0, 0.45)]
    assert pareto_frontier(points) == [(30.0, 0.5), (40.0, 0.6)]
    values = np.array([1.0, 3.0, np.nan, 5.0, 7.0])
    np.testing.assert_allclose(smooth_values(values, 2), [1.0, 2.0, 3.0, 5.0, 6.0])
    np.testing.assert_array_equal(smooth_values(values, 1), values)


def test_bad_run_directories_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_runs([tmp_path / "missing"])
    (tmp_path / "no_metrics").mkdir()
    (tmp_path / "no_metrics" / "config.yaml").write_text("algorithm: {name: grpo}\n")
    with pytest.raises(ValueError, match="no metrics.jsonl.*dcrl train"):
        load_runs([tmp_path / "no_metrics"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no logged step"):
        load_runs([empty])
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2,\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        load_runs([damaged])
    (damaged / "metrics.jsonl").write_text('{"step": 1, "reward/accuracy": 0.5}\n{"step": 2, "rew')
    assert load_runs([damaged])[0].steps.tolist() == [1]  # a cut-off last line is ignored
    with pytest.raises(ValueError, match="no run directories"):
        load_runs([])


@pytest.mark.slow
def test_report_and_compare_commands(tmp_path):
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("compare")(compare_command)
    runner = CliRunner()
    result = runner.invoke(
        app, ["report", str(FIXTURE), "--out", str(tmp_path / "r"), "--smooth", "3"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.html").is_file()

    result = runner.invoke(
        app, ["compare", str(FIXTURE), "--by-setting", "--csv", str(tmp_path / "t.csv")]
    )
    assert result.exit_code == 0, result.output
    assert "dcpo" in result.output and "aepo" in result.output
    assert (tmp_path / "t.md").is_file()

    result = runner.invoke(app, ["compare", str(tmp_path / "r")])  # a report, not a run
    assert result.exit_code == 2 and "no metrics.jsonl" in result.output
    result = runner.invoke(app, ["report", str(FIXTURE), "--smooth", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "smooth" in result.output


def _with_huge_values(run: Path, replacements: dict[int, dict[str, float]]) -> None:
    """Rewrite RUN/metrics.jsonl with the given values (by step), as JSON numbers."""
    lines = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.update(replacements.get(record["step"], {}))
        lines.append(json.dumps(record))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def control_titles(runs: list[Path]) -> list[str]:
    figure = next(f for f in report_figures(load_runs(runs)) if f.id == "control").figure
    return [] if figure is None else [ax.get_title() for ax in figure.axes]


def test_the_control_panels_are_the_control_metrics_the_runs_logged(tmp_path):
    """A user's target that logs control/knob gets a panel of it, titled by the metric's name
    (no target labels it), drawing its values; with no run logging DCPO's α or AEPO's m there is
    no panel of either. The fixture's AEPO and DCPO runs get their panels, titled as the targets
    declare (`Target.metric_labels`)."""
    from dcrl.targets.aepo import AEPOTarget
    from dcrl.targets.dcpo import DCPOTarget

    (run,) = copy_runs(["grpo-seed1"], tmp_path, keep_evals=False)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    knob = {step: 0.5 + 0.01 * step for step in steps}
    # control/previous_entropy is the measured entropy (the entropy figure's): no panel.
    _with_huge_values(
        run, {s: {"control/knob": knob[s], "control/previous_entropy": 0.1} for s in steps}
    )
    assert control_titles([run]) == ["control/knob"]
    figure = next(f for f in report_figures(load_runs([run])) if f.id == "control").figure
    np.testing.assert_allclose(figure.axes[0].get_lines()[0].get_ydata(), list(knob.values()))

    labels = {**AEPOTarget.metric_labels, **DCPOTarget.metric_labels}
    fixture_titles = control_titles([FIXTURE])
    assert set(fixture_titles) == {
        "temperature T", labels["control/num_reinforce"], labels["control/alpha"],
    }  # fmt: skip
    assert "AEPO m" in labels["control/num_reinforce"] and "DCPO α" in labels["control/alpha"]
    assert control_titles(copy_runs(["grpo-seed2"], tmp_path, keep_evals=False)) == []


USER_KNOB_TARGET = """
from dcrl.targets import Target


class Knob(Target):
    name = "knob"
    metric_labels = {"control/knob": "the knob's setting"}
"""


def test_a_users_target_titles_its_control_panel(tmp_path, monkeypatch):
    """A run whose config composes the user's 'module:Class' target: its control/* metric's
    panel is titled as that class declares, when the module imports where the report runs."""
    (run,) = copy_runs(["grpo-seed1"], tmp_path, keep_evals=False)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    _with_huge_values(run, {step: {"control/knob": 0.5} for step in steps})
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["algorithm"] = {"name": "composed", "targets": ["user_knob:Knob"]}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert control_titles([run]) == ["control/knob"]  # not importable yet: titled by its name
    (tmp_path / "user_knob.py").write_text(USER_KNOB_TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert control_titles([run]) == ["the knob's setting"]


@pytest.mark.faults
def test_finite_but_huge_metrics_are_left_out_of_the_figures_with_a_note(tmp_path):
    """1e308 in metrics.jsonl ended `dcrl report` in 'error: arange: cannot compute length' (or
    'Singular matrix', or a TypeError traceback), naming no file or metric. Now every figure is
    drawn, the huge points left out, and a note names the file and the metric."""
    from dcrl.cli import app

    dcpo, other_seed = copy_runs(["dcpo-seed1", "dcpo-seed2"], tmp_path / "runs")
    huge = {
        name: 1e308
        for name in ("entropy/full", "control/temperature", "entropy/target", "length/mean")
    }
    _with_huge_values(
        dcpo,
        {
            5: {**huge, "corr/length_acc_group": 1e308, "reward/accuracy": -1e308},
            6: {"corr/length_acc_group": -1e308},
            20: {"length/mean": 1e308, "reward/accuracy": 1e308},  # the final values too
        },
    )
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(dcpo), str(other_seed), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "error" not in result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    metrics_file = str(dcpo / "metrics.jsonl")
    for name in [*huge, "corr/length_acc_group", "reward/accuracy"]:
        assert any(metrics_file in note and f" {name} " in note for note in notes), name
    page = parse_page(out / "report.html")
    assert set(page.figures) == FIGURE_IDS and not page.skipped
    for figure_id, png in page.figures.items():
        assert (out / "figures" / f"{figure_id}.png").read_bytes() == png
        assert png.startswith(PNG_MAGIC)
    assert "data-note" in (out / "report.html").read_text()
    assert not list(out.rglob("*.tmp"))


@pytest.mark.faults
@pytest.mark.slow
def test_a_failed_figure_write_leaves_the_previous_figure_whole(tmp_path):
    """`ulimit -f 8` (8 KiB): rewriting a figure fails part-way. The old figure must survive
    whole (written beside it and renamed over it), not be cut to 8 KiB; one error line."""
    import os
    import subprocess
    import sys

    out = tmp_path / "report"
    runs = copy_runs(["grpo-seed1"], tmp_path / "runs", keep_evals=False)
    build_report(runs, out)
    before = {path.name: path.read_bytes() for path in (out / "figures").glob("*.png")}
    assert before and all(len(png) > 8192 for png in before.values())
    _with_huge_values(runs[0], {1: {"reward/accuracy": 0.0}})  # so the new figure differs
    repo = Path(__file__).resolve().parents[1]
    command = f"ulimit -f 8; exec {sys.executable} -m dcrl.cli report '{runs[0]}' --out '{out}'"
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["/bin/bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and f"--out {out}" in errors[0], result.stderr
    after = {path.name: path.read_bytes() for path in (out / "figures").glob("*.png")}
    assert after == before
    assert not list(out.rglob("*.tmp"))
