"""Engines under the stages: multi-slot LoRA (`lora`, `train`), lean decoding (`decode`) and shared-prefix scoring
(`scoring`). Nothing here imports a stage, a benchmark, the evaluation harness, the CLI or the server."""
