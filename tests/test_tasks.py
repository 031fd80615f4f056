"""dcrl.tasks: file loading, prompt templates, the synthetic arithmetic task, the task registry."""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import dcrl.tasks
import dcrl.tasks.arithmetic
import dcrl.tasks.prompts
from dcrl.tasks import (
    ANSWER_MARKER,
    BOXED_INSTRUCTION,
    SYNTHETIC_ALPHABET,
    ArithmeticChainTask,
    FileTask,
    Problem,
    format_prompt,
    get_task,
    load_problems,
)


@pytest.mark.parametrize("module", [dcrl.tasks, dcrl.tasks.arithmetic, dcrl.tasks.prompts])
def test_docstring_examples_run(module) -> None:
    assert doctest.testmod(module).failed == 0


# ---------------------------------------------------------------- local files

ROWS = [
    {"question": "1+1?", "target": 2, "uid": "a", "source": "toy", "worked": "1+1=2"},
    {
        "question": "Half of 1?",
        "target": "\\frac{1}{2}",
        "uid": "b",
        "source": "toy",
        "worked": None,
    },
    {"question": "2*3?", "target": "6", "uid": "c", "source": "other", "worked": "2*3=6"},
]
COLUMNS = {"problem_key": "question", "answer_key": "target", "id_key": "uid"}


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _check_loaded(problems: list[Problem]) -> None:
    assert [p.prompt for p in problems] == ["1+1?", "Half of 1?", "2*3?"]
    assert [p.answer for p in problems] == ["2", "\\frac{1}{2}", "6"]  # a number becomes text
    assert [p.id for p in problems] == ["a", "b", "c"]
    assert [p.meta for p in problems] == [{"source": "toy"}, {"source": "toy"}, {"source": "other"}]
    assert [p.solution for p in problems] == ["1+1=2", None, "2*3=6"]


def test_load_problems_jsonl_with_custom_columns(tmp_path: Path) -> None:
    lines = [json.dumps(row) for row in ROWS]
    path = _write_jsonl(tmp_path / "data.jsonl", [lines[0], "", lines[1], lines[2]])  # blank line
    _check_loaded(load_problems(path, **COLUMNS, solution_key="worked"))
    assert [p.id for p in load_problems(path, **COLUMNS, limit=2)] == ["a", "b"]


def test_load_problems_parquet_with_custom_columns(tmp_path: Path) -> None:
    rows = [dict(row, target=str(row["target"])) for row in ROWS]  # one type per column
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    _check_loaded(load_problems(path, **COLUMNS, solution_key="worked"))
    assert len(load_problems(path, **COLUMNS, limit=1)) == 1


def test_load_problems_numbers_ids_when_no_id_column(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "math.jsonl", ['{"problem": "p", "answer": "1"}'] * 2)
    problems = load_problems(path)
    assert [p.id for p in problems] == ["math-0", "math-1"]
    assert problems[0].meta == {} and problems[0].solution is None


def test_load_problems_malformed_line_names_file_line_and_field(tmp_path: Path) -> None:
    good = json.dumps({"problem": "p", "answer": "1"})
    path = _write_jsonl(tmp_path / "data.jsonl", [good, good, json.dumps({"problem": "p"})])
    message = f"{path}:3: missing field 'answer' (columns are set by problem_key/answer_key"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_problems(path)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"problem": "p", "answer": ', "data.jsonl:2: invalid JSON"),
        ('["p", "1"]', "data.jsonl:2: expected a JSON object"),
        ('{"problem": "p", "answer": null}', "data.jsonl:2: field 'answer' (answer) is NoneType"),
        ('{"problem": "p", "answer": true}', "data.jsonl:2: field 'answer' (answer) is bool"),
        ('{"problem": " ", "answer": "1"}', "data.jsonl:2: field 'problem' (problem) is empty"),
    ],
)
def test_load_problems_reports_bad_rows(tmp_path: Path, bad_line: str, message: str) -> None:
    path = _write_jsonl(tmp_path / "data.jsonl", ['{"problem": "p", "answer": "1"}', bad_line])
    with pytest.raises(ValueError, match=re.escape(message)):
        load_problems(path)


def test_load_problems_rejects_repeated_ids(tmp_path: Path) -> None:
    line = '{"problem": "p", "answer": "1", "uid": 7}'
    path = _write_jsonl(tmp_path / "data.jsonl", [line, line])
    with pytest.raises(
        ValueError, match=r"data.jsonl:2: id '7' .* repeats the one at .*data.jsonl:1"
    ):
        load_problems(path, id_key="uid")


def test_load_problems_parquet_errors_name_the_column_and_row(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"problem": ["p", "q"], "answer": ["1", None]}), path)
    with pytest.raises(ValueError, match=re.escape(f"{path}:row 2: field 'answer'")):
        load_problems(path)
    with pytest.raises(ValueError, match=r"missing column 'question'.*\['problem', 'answer'\]"):
        load_problems(path, problem_key="question")


def test_load_problems_missing_file_and_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="problem file not found"):
        load_problems(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("problem,answer\n")
    with pytest.raises(ValueError, match=r"unsupported file type '.csv'"):
        load_problems(tmp_path / "data.csv")


def test_file_task_reads_splits_and_grades_with_its_reward(tmp_path: Path) -> None:
    train = _write_jsonl(tmp_path / "train.jsonl", [json.dumps(row) for row in ROWS])
    task = get_task("file", train_path=train, reward="exact", **COLUMNS)
    problems = task.problems("train", size=2)
    assert [p.id for p in problems] == ["a", "b"]
    assert task.verify("\\boxed{2}", problems[0].answer, **problems[0].meta) == 1.0
    assert task.verify("\\boxed{3}", problems[0].answer, **problems[0].meta) == 0.0
    with pytest.raises(ValueError, match="no file for split 'test'; pass test_path"):
        task.problems("test")
    with pytest.raises(ValueError, match="give train_path, test_path or both"):
        FileTask()


# ---------------------------------------------------------------- prompts


def _tiny_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in memory: no download."""
    vocab = {"[UNK]": 0, "hello": 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    tokenizer.chat_template = chat_template
    return tokenizer


def test_format_prompt_builtin_and_custom_templates() -> None:
    assert format_prompt("1+2=", template="plain") == "1+2="
    boxed = format_prompt("What is 1+2?")
    assert boxed == "What is 1+2? " + BOXED_INSTRUCTION
    assert "<think>" in boxed and "</think>" in boxed and "\\boxed{}" in boxed
    custom = format_prompt("What is 1+2?", template="Q: {problem}\nPut it in \\boxed{}.\nA:")
    assert custom == "Q: What is 1+2?\nPut it in \\boxed{}.\nA:"


def test_format_prompt_chat_wraps_one_user_turn() -> None:
    template = (
        "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    prompt = format_prompt("What is 1+2?", _tiny_tokenizer(template), template="chat")
    assert prompt == f"<|user|>What is 1+2? {BOXED_INSTRUCTION}\n<|assistant|>"


def test_format_prompt_errors() -> None:
    with pytest.raises(ValueError, match="this tokenizer has none"):
        format_prompt("p", _tiny_tokenizer(None), template="chat")
    with pytest.raises(ValueError, match="no tokenizer was given"):
        format_prompt("p", template="chat")
    with pytest.raises(ValueError, match="unknown prompt template 'fancy'"):
        format_prompt("p", template="fancy")


# ---------------------------------------------------------------- the arithmetic task


def _left_to_right(prompt: str) -> int:
    """Reference evaluation of a chain like '12+5-3=' with a plain loop."""
    tokens = re.findall(r"\d+|[+\-*]", prompt.rstrip("="))
    value = int(tokens[0])
    for operator, operand in zip(tokens[1::2], tokens[2::2], strict=True):
        value = {"+": value + int(operand), "-": value - int(operand), "*": value * int(operand)}[
            operator
        ]
    return value


def _check_every_step(solution: str) -> None:
    """Each `a op b=c` step of a worked solution is correct arithmetic."""
    for step in solution.split(ANSWER_MARKER)[0].split(","):
        if step.startswith("check "):
            continue
        match = re.fullmatch(r"(-?\d+)([+\-*])(\d+)=(-?\d+)", step)
        assert match is not None, step
        left, operator, right, result = int(match[1]), match[2], int(match[3]), int(match[4])
        assert result == {"+": left + right, "-": left - right, "*": left * right}[operator], step


def test_arith_problems_are_deterministic_and_seed_dependent() -> None:
    first = ArithmeticChainTask(level=3, seed=1).problems("train", 200)
    again = get_task("arith", level=3, seed=1).problems("train", 200)
    other_seed = ArithmeticChainTask(level=3, seed=2).problems("train", 200)
    assert first == again
    assert [p.prompt for p in first] != [p.prompt for p in other_seed]
    assert len({p.prompt for p in first}) == 200  # distinct within a split
    assert len({p.id for p in first}) == 200


def test_arith_splits_are_disjoint() -> None:
    task = ArithmeticChainTask(level=(1, 2), seed=0, max_digits=1)
    train = task.problems("train", 500)
    test = task.problems("test", 500)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert all(task.split_of(p.prompt) == "train" for p in train)
    assert all(task.split_of(p.prompt) == "test" for p in test)


@pytest.mark.parametrize("operators", ["+-", "+-*"])
def test_arith_answers_and_solutions_are_correct(operators: str) -> None:
    task = ArithmeticChainTask(level=(1, 2, 3), seed=0, max_digits=3, operators=operators)
    for problem in task.problems("train", 300):
        assert problem.answer == str(_left_to_right(problem.prompt))
        assert problem.solution == task.solution(problem, problem.meta["solution_verbosity"])
        for verbosity in (0.0, 0.3, 0.5, 1.0):
            solution = task.solution(problem, verbosity)
            _check_every_step(solution)
            assert task.verify(solution, problem.answer, **problem.meta) == 1.0


def test_arith_verify_rejects_wrong_or_malformed_answers() -> None:
    assert ArithmeticChainTask().verify("12+5=17#17", "17") == 1.0
    wrong = ["12+5=17#18", "12+5=17", "12+5=17#17,check 17", "#", "#1.0", "#17#16", "#+17x"]
    assert [ArithmeticChainTask().verify(text, "17") for text in wrong] == [0.0] * len(wrong)
    assert ArithmeticChainTask().verify("#16#17\nextra", "17") == 1.0  # last marker, its line


def test_arith_verbose_solutions_are_longer() -> None:
    task = ArithmeticChainTask(level=3, seed=0)
    problems = task.problems("train", 300)
    lengths = {v: [len(task.solution(p, v)) for p in problems] for v in (0.0, 0.5, 1.0)}
    for problem_index in range(len(problems)):  # redundant steps are only ever added
        assert lengths[0.0][problem_index] <= lengths[0.5][problem_index]
        assert lengths[0.0][problem_index] < lengths[1.0][problem_index]
    means = {v: sum(values) / len(values) for v, values in lengths.items()}
    assert means[0.0] < means[0.5] < means[1.0] <= 2.1 * means[0.0]
    # the training solutions mix verbosities, so their lengths vary for the same level
    assert len({len(p.solution) - lengths[0.0][i] for i, p in enumerate(problems)}) > 3


def test_arith_level_is_the_number_of_steps() -> None:
    mean_steps = []
    for level in (1, 2, 4):
        problems = ArithmeticChainTask(level=level, seed=0).problems("test", 50)
        assert all(p.meta["level"] == level for p in problems)
        steps = [ArithmeticChainTask(seed=0).solution(p, 0.0).count("=") for p in problems]
        assert steps == [level] * len(problems)
        mean_steps.append(sum(len(p.solution.split(",")) for p in problems) / len(problems))
    assert mean_steps[0] < mean_steps[1] < mean_steps[2]
    mixed = ArithmeticChainTask(level=(1, 3), seed=0).problems("train", 200)
    assert {p.meta["level"] for p in mixed} == {1, 3}


def test_arith_text_stays_in_the_alphabet_and_short() -> None:
    text = ""
    for operators in ("+", "-", "*", "+-*"):
        task = ArithmeticChainTask(level=(1, 2, 3), seed=0, max_digits=3, operators=operators)
        for problem in task.problems("train", 100) + task.problems("test", 100):
            text += problem.prompt + problem.answer + task.solution(problem, 1.0) + "\n"
    assert set(text) <= set(SYNTHETIC_ALPHABET)
    assert len(set(SYNTHETIC_ALPHABET)) == len(SYNTHETIC_ALPHABET)  # no repeated characters
    default = ArithmeticChainTask(level=3, seed=0)
    concise = [len(default.solution(p, 0.0)) for p in default.problems("train", 500)]
    assert max(concise) <= 13 * 3 + 4  # the bound the class docstring states


def test_arith_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="level=0"):
        ArithmeticChainTask(level=0)
    with pytest.raises(ValueError, match="operators='/'"):
        ArithmeticChainTask(operators="/")
    with pytest.raises(ValueError, match="max_digits=4"):
        ArithmeticChainTask(max_digits=4)
    with pytest.raises(ValueError, match="verbosity_levels"):
        ArithmeticChainTask(verbosity_levels=(1.5,))
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        ArithmeticChainTask().problems("valid", 10)
    with pytest.raises(ValueError, match="size=None"):
        ArithmeticChainTask().problems("train")
    with pytest.raises(ValueError, match="found only .* distinct train problems"):
        ArithmeticChainTask(level=1, max_digits=1, operators="+").problems("train", 100)
    with pytest.raises(ValueError, match="not a chain"):
        ArithmeticChainTask().solution(Problem(prompt="what?", answer="1", id="x"))


def test_get_task_rejects_unknown_names() -> None:
    with pytest.raises(
        ValueError, match=r"unknown task 'gsm8k': use one of \['arith', 'explore', 'file'\]"
    ):
        get_task("gsm8k")
    assert isinstance(dcrl.tasks.TASKS["arith"](), ArithmeticChainTask)


# ---------------------------------------------------------------- answer on the first line


def test_arith_line_format_reads_the_first_non_blank_line() -> None:
    task = ArithmeticChainTask(answer_format="line")
    # a few-shot model's answer, then the next question it invents (whose answer is ignored)
    right = ["7", " 7", " 7\nQ: 2+3=\nA: 5", "\n 7 \nA: 9", "7\n#8"]
    assert [task.verify(text, "7") for text in right] == [1.0] * len(right)
    wrong = ["", " \n", " 8\nQ: 3+4=\nA: 7", "7.", "#7", "7 apples", "A: 7", "3+4=7", "x\n7"]
    assert [task.verify(text, "7") for text in wrong] == [0.0] * len(wrong)
    assert task.verify(" -12\n", "-12") == 1.0


def test_arith_line_format_solutions_are_the_bare_answer_and_verify() -> None:
    marker_task = ArithmeticChainTask(level=(1, 2), seed=3, max_digits=1)
    line_task = ArithmeticChainTask(level=(1, 2), seed=3, max_digits=1, answer_format="line")
    marker_problems = marker_task.problems("train", 50)
    line_problems = line_task.problems("train", 50)
    # the same problems: the format changes only the solutions and the grading
    assert [p.prompt for p in line_problems] == [p.prompt for p in marker_problems]
    for problem in line_problems:
        assert problem.solution == problem.answer
        assert line_task.verify(problem.solution + "\nQ: 1+1=", problem.answer) == 1.0
        # each format rejects the other's solution
        marked = marker_task.solution(problem)
        assert line_task.verify(marked, problem.answer) == 0.0
        assert marker_task.verify(problem.solution, problem.answer) == 0.0


def test_arith_line_format_with_a_few_shot_template() -> None:
    template = "Q: 2+3=\nA: 5\nQ: {problem}\nA:"
    task = get_task("arith", level=1, max_digits=1, operators="+", answer_format="line")
    problem = task.problems("train", 1)[0]
    prompt = format_prompt(problem.prompt, template=template)
    assert prompt == f"Q: 2+3=\nA: 5\nQ: {problem.prompt}\nA:"
    assert task.verify(f" {problem.answer}\nQ:", problem.answer) == 1.0


def test_arith_rejects_unknown_answer_format() -> None:
    with pytest.raises(ValueError, match="answer_format='boxed'.*'marker'.*'line'"):
        ArithmeticChainTask(answer_format="boxed")


def test_arith_slips_carry_into_the_answer_and_only_verbose_solutions_slip() -> None:
    # The over-thinking regime: a re-check restates the running value, the chain goes on from
    # it, and a slipped restatement makes the worked solution's answer wrong.
    task = ArithmeticChainTask(level=3, seed=0, max_digits=1, slip_rate=0.4)
    problems = task.problems("train", 400)
    accuracy = {}
    for verbosity in (0.0, 0.5, 1.0):
        solved = []
        for problem in problems:
            solution = task.solution(problem, verbosity)
            steps = solution.split("#")[0].split(",")
            value = int(re.match(r"-?\d+", problem.prompt)[0])
            offset = 0  # how far the running value has drifted from the true one
            for step in steps:  # every step starts from the value the previous one wrote
                if step.startswith("check "):
                    restated = int(step[len("check ") :])
                    offset += restated - value
                    value = restated
                    continue
                first, operator, operand, result = re.fullmatch(
                    r"(-?\d+)([+\-*])(\d+)=(-?\d+)", step
                ).groups()
                assert int(first) == value
                value = value + int(operand) if operator == "+" else value - int(operand)
                assert int(result) == value
            assert int(solution.split("#")[1]) == value
            correct = task.verify(solution, problem.answer)
            assert correct == float(offset == 0)  # two slips can cancel out
            solved.append(correct)
        accuracy[verbosity] = sum(solved) / len(solved)
    assert accuracy[0.0] == 1.0
    for verbosity in (0.5, 1.0):
        # Each of the 3 steps slips with probability 0.4 v, by one of ±1, ±2, ±3; the answer is
        # right when the slips sum to 0 (two slips can cancel).
        slip = 0.4 * verbosity
        step = {0: 1 - slip} | {d: slip / 6 for d in (-3, -2, -1, 1, 2, 3)}
        total = {0: 1.0}
        for _ in range(3):  # the distribution of the sum, by convolution
            convolved: dict[int, float] = {}
            for a, p_a in total.items():
                for b, p_b in step.items():
                    convolved[a + b] = convolved.get(a + b, 0.0) + p_a * p_b
            total = convolved
        # 400 problems: binomial standard deviation <= 0.025, so 3 sd is 0.075.
        assert accuracy[verbosity] == pytest.approx(total[0], abs=0.075)
    assert accuracy[1.0] < accuracy[0.5] < accuracy[0.0]
    with pytest.raises(ValueError, match="slip_rate"):
        ArithmeticChainTask(slip_rate=1.0)
