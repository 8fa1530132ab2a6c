"""Test-only ComfyUI nodes (loaded by the comfyui test fixture through TOWER_COMFY_CUSTOM_NODES).

They let the integration tests exercise, on a real server, what model-free core nodes cannot:
step progress and interrupts (a slow node driving ``comfy.utils.ProgressBar``), a node that
raises, an out-of-memory error, and a "loader" whose model list differs between servers.
"""

import os
import time

import comfy.utils
import folder_paths
import torch

# A model folder of our own: a server has a "model" when <base>/models/tower_models/<name> exists.
folder_paths.folder_names_and_paths["tower_models"] = (
    [os.path.join(folder_paths.models_dir, "tower_models")],
    {".bin"},
)


class TowerSlowProgress:
    """Sleeps ``steps`` x ``step_s`` seconds, reporting each step like a sampler does."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "steps": ("INT", {"default": 5, "min": 1, "max": 10000}),
                "step_s": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 60.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "tower/test"

    def run(self, images, steps, step_s):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            time.sleep(step_s)
            # The progress hook also raises InterruptProcessingException when interrupted.
            bar.update(1)
        return (images,)


class TowerRaise:
    """Raises ``ValueError(message)``: a deterministic node failure."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "message": ("STRING", {"default": "tower test failure"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "tower/test"

    def run(self, images, message):
        raise ValueError(message)


class TowerOutOfMemory:
    """Raises torch's OutOfMemoryError, as a GPU allocation that does not fit would."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "tower/test"

    def run(self, images):
        error = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
        raise error("CUDA out of memory. Tried to allocate 20.00 GiB")


class TowerModelLoader:
    """Passes images through if ``model_name`` is one of this server's tower_models files."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "model_name": (folder_paths.get_filename_list("tower_models"),),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "tower/test"

    def run(self, images, model_name):
        return (images,)


NODE_CLASS_MAPPINGS = {
    "TowerSlowProgress": TowerSlowProgress,
    "TowerRaise": TowerRaise,
    "TowerOutOfMemory": TowerOutOfMemory,
    "TowerModelLoader": TowerModelLoader,
}
