"""The LoopCoder-V2 Parallel Loop Transformer alone (docs/plt.md); it imports nothing else of LoopCoder.

Importing this package registers `model_type="iquestpltcoder"` with transformers'
Auto classes, so `AutoModelForCausalLM.from_pretrained(dir)` loads a LoopCoder-V2
checkpoint with this implementation (no trust_remote_code).
"""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import PLTCache
from .configuration_plt import IQuestPLTCoderConfig
from .loading import CheckpointError
from .modeling_plt import IQuestPLTCoderForCausalLM, IQuestPLTCoderModel

AutoConfig.register(IQuestPLTCoderConfig.model_type, IQuestPLTCoderConfig, exist_ok=True)
AutoModel.register(IQuestPLTCoderConfig, IQuestPLTCoderModel, exist_ok=True)
AutoModelForCausalLM.register(IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM, exist_ok=True)

__all__ = ["CheckpointError", "IQuestPLTCoderConfig", "IQuestPLTCoderForCausalLM", "IQuestPLTCoderModel", "PLTCache"]
