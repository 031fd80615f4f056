"""dcrl inside verl (Ray + FSDP/Megatron + vLLM): registered advantage estimators, a policy
loss and an agent loop (`register`), the DataProto transformations that hand verl's batches to
dcrl's step protocol (`transforms`, `dcrl.train.step`), and a recipe for the steps verl's hooks
cannot express, on verl's legacy `RayPPOTrainer` (`trainer`) and its V1 `PPOTrainer`
(`trainer_v1`), launched with `python -m dcrl.integrations.verl.main`. For verl on a CPU: a
platform (`cpu_platform`), gloo-started workers (`cpu_workers`) and a transformers rollout
server (`hf_rollout`). See docs/scaling_out_verl.md.

Importing this package does not import verl; its modules do.
"""
