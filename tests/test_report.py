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
