"""The experiments of bench/reproduce.py, one module each; `EXPERIMENTS` in the order they run.

Each module owns everything about its experiment, for every testbed (common.TESTBEDS):

    NAME                 the experiment's name (`--experiment`, the results' file names)
    CLAIM_PREFIXES       the prefixes of its claims ("entropy: ..."): its rows in claims.json
    SETTINGS             {testbed name: its constants}; `.placeholders` names those not measured
    specs(seeds, testbed) -> [RunSpec]                 the training runs
    evaluated(specs, testbed) -> [RunSpec]             those evaluated on the held-out split
    uses_pretrained(testbed) -> bool                   whether the pretrained policy is evaluated
    summarize(specs, root, testbed, pretrained) -> dict     written to <out>/<NAME>.json
    markdown(summary, testbed) -> str                  written to <out>/<NAME>.md
    claims(summary, testbed) -> [{claim, goal, value, met}]  its rows of <out>/claims.json
    figures(specs, root, summary, out, testbed) -> [file names]  its own figures in <out>

A new claim is a new row from `claims` (and what it needs in `summarize`), in that module only;
a new experiment is a new module listed below. `--experiment all` runs `EXPERIMENTS`; the modules of
`NAMED_ONLY` run when named, and only on the testbeds their SETTINGS hold.
"""

from __future__ import annotations

from . import (
    baselines,
    combined,
    compression,
    control_diagnosis,
    control_range,
    entropy,
    exploration,
    regime,
    sweep,
)

EXPERIMENTS = {
    module.NAME: module for module in (entropy, sweep, exploration, compression, combined)
}
# Experiments run only when named (`--experiment <name>`), on the testbeds in their SETTINGS:
# the entropy controller over a range of targets and its diagnosis, and the papers' comparison
# table with its baselines and ablations, and the map of its gains over the trap share (issue 27).
NAMED_ONLY = {
    module.NAME: module for module in (control_diagnosis, control_range, baselines, regime)
}
ALL = {**EXPERIMENTS, **NAMED_ONLY}
