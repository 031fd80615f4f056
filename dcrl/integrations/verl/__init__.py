"""dcrl inside verl (Ray + FSDP/Megatron + vLLM): registered advantage estimators, a policy
loss and an agent loop (`register`), the DataProto transformations that hand verl's batches to
dcrl's step protocol (`transforms`, `dcrl.train.step`), and a legacy-`RayPPOTrainer` recipe for
the steps verl's hooks cannot express (`trainer`, launched with
`python -m dcrl.integrations.verl.main`). See docs/scaling_out_verl.md.

Importing this package does not import verl; its modules do.
"""
