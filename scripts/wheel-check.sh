#!/usr/bin/env bash
# The packaging check (`make test-wheel`, in CI after `make test`): dcrl works outside a clone.
# Builds dcrl's wheel from a copy of the files git knows, installs it into a fresh venv
# (torch==2.13.0 first, as scripts/install.sh does, then the wheel with its dependencies held to
# requirements/constraints.txt; the package index must be reachable), and from an empty folder
# outside the clone runs: `dcrl recipes`, a packaged recipe by name, `dcrl demo` at its smallest
# (2 steps of 4 prompts x 4 samples per algorithm, 4 held-out problems x 2 samples) and a handful
# of the fault suite's bad-input cases (scripts/wheel_check_faults.py).
#
#   bash scripts/wheel-check.sh                      # ~9 min on 2 busy cores (README, Development)
#   KEEP=1 bash scripts/wheel-check.sh               # keep the scratch folder (its path is printed)
#   WHEEL_FAULTS=--all bash scripts/wheel-check.sh   # every bad-input case of the corpus
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dcrl-wheel-check.XXXXXX")
cleanup() { if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
step() { echo "== [${SECONDS}s] $*"; }

step "copy the source (the files git knows, not its ignored ones) to $WORK/src"
# A copy, so that a stale build/ of the checkout can never end up in the wheel.
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard \
  | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null \
  | tar -xf - -C "$WORK/src"

step "build the wheel in a fresh venv"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet --upgrade pip
"$VPY" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/dcrl-*.whl)
"$VPY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
missing = [n for n in ("dcrl/recipes/explore-dcpo.yaml", "dcrl/train/trainer.py",
                       "dcrl/assets/tiny-explore/config.json") if n not in names]
assert not missing, f"the wheel lacks {missing}"
print(f"{sys.argv[1]}: {len(names)} files")
EOF

step "install it with its dependencies (torch==2.13.0, then requirements/constraints.txt)"
"$VPY" -m pip install --quiet "torch==2.13.0"
"$VPY" -m pip install --quiet -c "$REPO/requirements/constraints.txt" "$WHEEL"

mkdir "$WORK/empty"
cd "$WORK/empty"
unset PYTHONPATH
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DCRL="$WORK/venv/bin/dcrl"

step "from an empty folder ($PWD): which dcrl, its recipes"
"$VPY" - "$REPO" <<'EOF'
import sys
from pathlib import Path
import dcrl
where = Path(dcrl.__file__).resolve()
assert not where.is_relative_to(Path(sys.argv[1]).resolve()), f"dcrl imported from the clone: {where}"
print(f"dcrl {dcrl.__version__} from {where.parent}")
EOF
"$DCRL" recipes >"$WORK/recipes.txt"
cat "$WORK/recipes.txt"
grep -q '^explore-dcpo  *DCPO on the exploration testbed' "$WORK/recipes.txt"
"$DCRL" train -c explore-dcpo --print-config >"$WORK/explore-dcpo.yaml"
grep -q '^  name: tiny-explore$' "$WORK/explore-dcpo.yaml"

step "dcrl demo, smallest settings"
"$DCRL" demo --out demo --steps 2 --eval-problems 4 --eval-samples 2 \
  train.prompts_per_step=4 train.mini_batch_prompts=2 rollout.n=4 train.threads=1 log.console=false
for algorithm in grpo aepo dcpo icr; do
  test "$(wc -l <"demo/$algorithm/metrics.jsonl")" -eq 2
  test -f "demo/$algorithm/eval-test-n2/metrics.json"
done
test -f demo/report/report.html
grep -q "avg@n" demo/eval_summary.md

step "bad inputs of the fault suite, from the wheel"
mkdir -p "$WORK/shim/tests"
cp "$REPO"/tests/{__init__.py,helpers.py,fault_inputs.py} "$WORK/shim/tests/"
# shellcheck disable=SC2086  # WHEEL_FAULTS: options or case names, split on purpose
"$VPY" "$REPO/scripts/wheel_check_faults.py" --dcrl "$DCRL" --tests-dir "$WORK/shim" \
  --work "$WORK/faults" ${WHEEL_FAULTS:-}

step "the installed wheel works outside a clone"
