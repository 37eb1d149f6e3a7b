"""ttsi: self-improving LLM agents at test time (TT-SI).

    from ttsi import HFModel, SelfImprovingAgent, AgentConfig, load_task
    agent = SelfImprovingAgent(HFModel.from_pretrained("Qwen/Qwen2.5-1.5B-Instruct"), AgentConfig(method="tt-si"))
    response = agent.respond(load_task("task.json"))   # gate -> synthesize -> adapt -> answer -> reset

Names are imported lazily so that `import ttsi` (and the CLI's --help) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SelfImprovingAgent": "ttsi.agent", "Response": "ttsi.trace", "Decision": "ttsi.trace",
    "AgentConfig": "ttsi.config", "GateConfig": "ttsi.config", "SynthesisConfig": "ttsi.config",
    "TeacherConfig": "ttsi.config", "LearnConfig": "ttsi.config",
    "HFModel": "ttsi.model",
    "Task": "ttsi.task", "Tool": "ttsi.task", "Call": "ttsi.task", "load_task": "ttsi.task", "load_tasks": "ttsi.task",
    "assess": "ttsi.awareness", "Uncertainty": "ttsi.awareness", "tau_from_reference": "ttsi.awareness",
    "tau_for_budget": "ttsi.awareness",
    "SelfSynthesizer": "ttsi.augment", "TeacherSynthesizer": "ttsi.teacher", "Learner": "ttsi.learn",
    "TTSIError": "ttsi.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ttsi' has no attribute {name!r}")
