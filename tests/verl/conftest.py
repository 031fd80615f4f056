"""tests/verl/ runs in .venv-verl (`make test-verl`), where verl 0.9.1 is installed. In an
environment without verl (the main .venv) the whole folder is skipped at collection."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("verl") is not None else ["test_*.py"]
