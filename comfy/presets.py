"""Render presets: workflow templates Tower ships for real models, and the model files each needs.

A preset is an API-format template in ``comfy/templates/<name>.json`` whose slots are wired (the
prompt, negative, seed, steps, cfg, sampler, size, frame count and, for ``anime-ref``, the
reference image: :mod:`comfy.workflow`) and whose loader nodes say which model file they load
(``"_meta": {"tower_model": "<role>"}``). The file behind each role comes from
``comfy/templates/models.json`` (ComfyUI folder, file name, size, sha256 and download URL, as the
official ComfyUI templates publish them), and a user names their own file for a role with the
``TOWER_COMFY_MODELS`` setting (``{"sd15-checkpoint": "myAnimeModel.safetensors"}``).

Two kinds:

* ``keyframe``: the model draws one picture (frame count 1); the renderer animates it to the
  shot's frames by the plan's camera movement (:mod:`render.camera`), as TV anime does;
* ``video``: the model draws every frame (the template's ``length``).

Nothing here talks to a server: :func:`missing_files` compares a preset's files with the folder
listings a server gave (``GET /models/{folder}``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from comfy.errors import WorkflowError
from comfy.workflow import canonical_sha256

TEMPLATES = Path(__file__).with_name("templates")
MODEL_MARK = "tower_model"
#: The model input of each core loader node, and the ComfyUI models folder it lists.
LOADER_INPUTS: dict[str, tuple[str, str]] = {
    "CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
    "UNETLoader": ("unet_name", "diffusion_models"),
    "CLIPLoader": ("clip_name", "text_encoders"),
    "VAELoader": ("vae_name", "vae"),
    "LoraLoader": ("lora_name", "loras"),
}

Kind = Literal["keyframe", "video"]


@dataclass(frozen=True)
class ModelFile:
    """One file a preset loads: ``<ComfyUI models dir>/<folder>/<name>``."""

    role: str
    folder: str
    name: str
    url: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "folder": self.folder, "name": self.name, "url": self.url, "sha256": self.sha256,
                "size_bytes": self.size_bytes}


@dataclass(frozen=True)
class Preset:
    name: str
    kind: Kind
    summary: str
    #: The size the model was trained for (width, height): where it draws best.
    native_size: tuple[int, int]
    #: What the model's publisher says it needs (text, theirs; ``None`` where they say nothing).
    publisher_vram: str | None = None
    needs_reference: bool = False

    @property
    def template(self) -> Path:
        return TEMPLATES / f"{self.name}.json"

    def graph(self, model_names: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The template with every marked loader set to the file configured for its role."""
        graph = copy.deepcopy(_template(self.name))
        for node, role in _marked_loaders(graph, self.name):
            input_name, _ = LOADER_INPUTS[node["class_type"]]
            node["inputs"][input_name] = model_file(role, model_names).name
        return graph

    def workflow(self, model_names: Mapping[str, str] | None = None) -> str:
        """The pattern-context name: another model file is another model, learnt apart."""
        return f"comfyui-{self.name}-{canonical_sha256(self.graph(model_names))[:12]}"

    def files(self, model_names: Mapping[str, str] | None = None) -> list[ModelFile]:
        """The files this preset loads, once each, in the template's order."""
        roles = dict.fromkeys(role for _, role in _marked_loaders(_template(self.name), self.name))
        return [model_file(role, model_names) for role in roles]


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("anime-sd15", "keyframe", "txt2img keyframe on an SD1.5-architecture anime checkpoint", (512, 512),
           "2.9 GiB (the ComfyUI template index, for its SD1.5 template)"),
    Preset("anime-sdxl", "keyframe", "txt2img keyframe on an SDXL-architecture anime checkpoint", (1024, 1024)),
    Preset("anime-ref", "keyframe", "img2img from the character's reference image on an SD1.5 checkpoint, "
           "so the character keeps its look across shots", (512, 512),
           "2.9 GiB (the ComfyUI template index, for its SD1.5 template)", needs_reference=True),
    Preset("video-wan22-5b", "video", "Wan 2.2 TI2V 5B text-to-video, every frame drawn by the model", (1280, 704),
           "\"should fit well on 8GB vram with the ComfyUI native offloading\" (ComfyUI's Wan 2.2 tutorial)"),
    Preset("video-ltxv", "video", "LTX-Video 2B text-to-video, every frame drawn by the model", (768, 512)),
)}


def preset(name: str) -> Preset:
    """The preset called ``name``; :class:`WorkflowError` naming the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise WorkflowError(f"unknown render preset {name!r}; choose one of {', '.join(PRESETS)}") from None


@cache
def catalog() -> dict[str, ModelFile]:
    """The published model file of each role (``comfy/templates/models.json``)."""
    data = json.loads((TEMPLATES / "models.json").read_text())
    return {role: ModelFile(role=role, **{k: v for k, v in entry.items() if k != "source"})
            for role, entry in data["roles"].items()}


def model_file(role: str, model_names: Mapping[str, str] | None = None) -> ModelFile:
    """The file of ``role``: the published one, renamed by the user's ``TOWER_COMFY_MODELS`` entry
    (a file of their own: its size, hash and URL are unknown to Tower)."""
    published = catalog()[role]
    name = (model_names or {}).get(role)
    if not name or name == published.name:
        return published
    return ModelFile(role=role, folder=published.folder, name=name)


def missing_files(files: Iterable[ModelFile], listings: Mapping[str, Iterable[str]]) -> list[ModelFile]:
    """The files not in a server's folder listings (``{folder: [file names]}``, as
    ``GET /models/{folder}`` answers; ComfyUI writes sub-folders with ``/``)."""
    present = {folder: {name.replace("\\", "/") for name in names} for folder, names in listings.items()}
    return [f for f in files if f.name not in present.get(f.folder, set())]


def unknown_roles(model_names: Mapping[str, str]) -> list[str]:
    """Roles in a ``TOWER_COMFY_MODELS`` mapping that no preset loads (a typo, most likely)."""
    return sorted(set(model_names) - set(catalog()))


@cache
def _template(name: str) -> dict[str, Any]:
    return json.loads((TEMPLATES / f"{name}.json").read_text())


def _marked_loaders(graph: dict[str, Any], name: str) -> list[tuple[dict[str, Any], str]]:
    out = []
    for node in graph.values():
        role = (node.get("_meta") or {}).get(MODEL_MARK)
        if role is None:
            continue
        if node["class_type"] not in LOADER_INPUTS:
            raise WorkflowError(f"preset {name}: {node['class_type']} is marked {MODEL_MARK} but is not a known loader")
        if role not in catalog():
            raise WorkflowError(f"preset {name}: model role {role!r} is not in models.json")
        out.append((node, role))
    return out
