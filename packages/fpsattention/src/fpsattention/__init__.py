"""FPSAttention: FP8 quantization and 3D tile sparsity co-designed for video diffusion, scheduled over
the denoising steps, with quantization-aware fine-tuning.

Two lines on a diffusers Wan transformer::

    import fpsattention
    state = fpsattention.apply(pipe.transformer)            # FPSSchedule() defaults
    state.set_step(0, num_steps)
    video = pipe(prompt, num_inference_steps=num_steps, callback_on_step_end=state.pipeline_callback)
    fpsattention.remove(pipe.transformer)

Quantization-aware phase adapters trained by ``fpsattention train`` load with
``fpsattention.load_adapters(pipe.transformer, "runs/qat/final/adapters")`` and run in their phases.
"""

from fpsattention._version import __version__
from fpsattention.adapters import (
    AdapterConfig,
    PhaseAdapters,
    add_adapters,
    get_adapters,
    load_adapters,
    remove_adapters,
    save_adapters,
)
from fpsattention.attention import fps_attention
from fpsattention.processor import FPSAttnProcessor, FPSState, apply, denoising_step, get_state, remove
from fpsattention.schedule import FPSSchedule, Phase

__all__ = [
    "AdapterConfig",
    "FPSAttnProcessor",
    "FPSSchedule",
    "FPSState",
    "Phase",
    "PhaseAdapters",
    "__version__",
    "add_adapters",
    "apply",
    "denoising_step",
    "fps_attention",
    "get_adapters",
    "get_state",
    "load_adapters",
    "remove",
    "remove_adapters",
    "save_adapters",
]
