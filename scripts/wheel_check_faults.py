"""Bad-input cases of the fault suite (tests/fault_inputs.py) against an installed `dcrl`, each as a
real process started in an empty folder: exit status 2, one `error:` line (the last thing said)
that names the input, no traceback. scripts/wheel-check.sh runs it with the python of a fresh
venv that holds dcrl's wheel, and a folder holding a copy of tests/ as the only thing added to
the path, so `import dcrl` is the wheel's, never the clone's.

    python scripts/wheel_check_faults.py --dcrl VENV/bin/dcrl --tests-dir SHIM --work DIR [CASE ...]
    python scripts/wheel_check_faults.py ... --all     # every case of the corpus
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

# A bad config value, an unknown key, a missing data file, a bad data row, a broken config file,
# an unknown recipe name, a missing model, and the eval and report commands' own inputs.
DEFAULT_CASES = (
    "lr-nan",
    "unknown-train-key",
    "missing-data-file",
    "data-row-without-answer",
    "config-invalid-yaml",
    "config-unknown-recipe",
    "model-missing",
    "eval-unknown-data",
    "report-broken-config",
)
TIME_LIMIT_S = 300


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dcrl", type=Path, required=True, help="The installed dcrl command.")
    parser.add_argument("--tests-dir", type=Path, required=True, help="Holds a copy of tests/.")
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (made empty).")
    parser.add_argument("--all", action="store_true", help="Every case of the corpus.")
    parser.add_argument(
        "cases", nargs="*", help=f"Case names (default: {' '.join(DEFAULT_CASES)})."
    )
    options = parser.parse_args()

    sys.path.insert(0, str(options.tests_dir))
    import dcrl
    from tests.fault_inputs import BAD_INPUTS

    here = Path(__file__).resolve().parents[1]
    if Path(dcrl.__file__).resolve().is_relative_to(here):
        print(f"dcrl was imported from the clone ({dcrl.__file__}), not the wheel", file=sys.stderr)
        return 1
    by_name = {case.name: case for case in BAD_INPUTS}
    names = list(by_name) if options.all else options.cases or list(DEFAULT_CASES)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        print(f"unknown cases: {', '.join(unknown)}", file=sys.stderr)
        return 1

    env = {
        **os.environ,
        "PYTHONPATH": str(options.tests_dir),  # tests.* reward functions; dcrl stays the wheel's
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    failed = 0
    for name in names:
        case = by_name[name]
        scratch = options.work / name
        cwd = options.work / f"{name}-cwd"  # an empty folder to start in
        scratch.mkdir(parents=True)
        cwd.mkdir()
        started = time.monotonic()
        try:
            process = subprocess.run(  # noqa: S603 (the installed dcrl, arguments of the corpus)
                [str(options.dcrl), *case.args(scratch)],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIME_LIMIT_S,
            )
            code, stderr = process.returncode, process.stderr
        except subprocess.TimeoutExpired:
            code, stderr = -1, f"hung: still running after {TIME_LIMIT_S} s"
        errors = [line for line in stderr.splitlines() if line.startswith("error")]
        expected = case.names.replace("{scratch}", str(scratch))
        ok = (
            code == 2
            and len(errors) == 1
            and errors[0] == stderr.strip().splitlines()[-1]
            and expected in errors[0]
            and "Traceback" not in stderr
        )
        seconds = time.monotonic() - started
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({seconds:.1f} s): {errors[0] if errors else ''}")
        if not ok:
            failed += 1
            print(f"  exit {code}, expected one error line naming {expected!r}:\n{stderr[-2000:]}")
    print(f"bad inputs from the installed wheel: {len(names) - failed} of {len(names)} handled")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
