"""Numbers in data files keep their written form: an integral float is an integer (`3.0` → "3",
`1e20` → "100000000000000000000"), so a correct boxed answer scores 1 under the exact and math
graders; NaN and ±Infinity answers are refused (dcrl/tasks/files.py)."""

from __future__ import annotations

import pytest

from dcrl.rewards import exact_match_reward, math_reward
from dcrl.tasks import load_problems

pytestmark = pytest.mark.faults


def test_json_numbers_keep_their_written_form(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"problem": "a", "answer": 3.0, "weight": 0.5}\n'
        '{"problem": "b", "answer": 1e20}\n'
        '{"problem": "c", "answer": 0.10}\n'
        '{"problem": "d", "answer": 7}\n'
    )
    problems = load_problems(path)
    assert [p.answer for p in problems] == ["3", "100000000000000000000", "0.10", "7"]
    assert problems[0].meta == {"weight": 0.5}  # other columns stay numbers
    assert exact_match_reward("so \\boxed{3}", problems[0].answer) == 1.0
    assert math_reward("so \\boxed{100000000000000000000}", problems[1].answer) == 1.0


def test_parquet_floats_that_are_integers_read_as_integers(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"problem": ["a", "b"], "answer": [3.0, 2.5]}), path)
    assert [p.answer for p in load_problems(path)] == ["3", "2.5"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_answers_are_refused_naming_the_row(tmp_path, constant):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        f'{{"problem": "a", "answer": "1"}}\n{{"problem": "b", "answer": {constant}}}\n'
    )
    with pytest.raises(
        ValueError, match=f"rows.jsonl:2: field 'answer' \\(answer\\) is {constant}"
    ):
        load_problems(path)
