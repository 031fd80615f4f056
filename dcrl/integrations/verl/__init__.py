"""dcrl inside verl (Ray + FSDP/Megatron + vLLM): registered advantage estimators, a policy
loss and an agent loop (`register`), the DataProto transformations of AEPO, DCPO and ICR
(`transforms`), and a `RayPPOTrainer` recipe for the steps verl's hooks cannot express
(`trainer`, launched with `python -m dcrl.integrations.verl.main`). See docs/scaling_out_verl.md.

Importing this package does not import verl; its modules do.
"""
