"""Adapters that run dcrl's algorithms inside the training engines users already scale out with.

Each adapter is thin: it calls `dcrl.core` and `dcrl.algorithms` and imports its engine lazily,
only when the adapter module itself is imported.

- `dcrl.integrations.trl`: `DCRLGRPOTrainer`, a TRL `GRPOTrainer` running GRPO, AEPO, DCPO and
  ICR (`pip install 'dcrl[trl]'`; docs/scaling_out_trl.md).
"""
