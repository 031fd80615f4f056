#!/usr/bin/env bash
# Refresh requirements/constraints.txt from the resolved ./.venv (on purpose, not on every
# install): every package pip resolved, pinned, except dcrl itself. Review the diff, run
# `make test`, and commit it as one change ("Refresh the pinned dependency set: ...").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
{
  echo "# The resolved dependency set that scripts/install.sh installs (pip install -c)."
  echo "# Regenerate with scripts/freeze-constraints.sh; \`make check-latest\` shows the drift."
  "$VENV/bin/python" -m pip freeze --exclude-editable --exclude dcrl | sed 's/^torch==\(.*\)+cpu$/torch==\1/'
} > requirements/constraints.txt
echo "wrote requirements/constraints.txt ($(grep -vc '^#' requirements/constraints.txt) packages)"
