"""Workflow templates in ComfyUI's API format, with named slots found by following the graph.

A template is any API-format graph (``{node_id: {"class_type", "inputs"}}``, as "Export (API)"
writes it) or a UI-format export converted with :mod:`comfy.ui_format`. Tower patches these named
slots, found from the graph's links, never from node ids:

==================  ===========================================================================
``prompt``          the text input of each text encoder upstream of a sampler's ``positive``
``negative_prompt`` the same for ``negative``
``seed``            ``seed``/``noise_seed`` of the sampler (or of its noise node); with no
                    sampler, every ``seed``/``noise_seed`` in the graph
``steps``, ``cfg``  the sampler's (or its scheduler's / guider's)
``sampler``         ``sampler_name`` of the sampler (KSampler, KSamplerAdvanced) or of its
                    ``KSamplerSelect``; Tower's name is mapped to ComfyUI's
                    (:func:`comfy_sampler_name`) and set only where it is a valid choice
``width``,          the latent (or image) source upstream of the sampler's ``latent_image``
``height``          (``EmptyLatentImage``, the ``Empty*LatentVideo`` nodes, the ``ImageScale`` before a
                    ``VAEEncode``...); with no sampler,
                    every node with literal ``width`` and ``height`` inputs (``EmptyImage``)
``frame_count``     that source's ``length`` (video latents) or else ``batch_size``
``reference_image`` the ``image`` input of ``LoadImage`` nodes (a character reference)
``motion_bucket``   every literal ``motion_bucket_id`` (``SVD_img2vid_Conditioning``): how much a
                    video model moves the picture (Tower's ``motion_strength`` 0-1 as 1-255)
==================  ===========================================================================

A slot a template does not have is simply absent (:attr:`WorkflowTemplate.slots`); patching a
value for an absent slot is ignored, except that :meth:`WorkflowTemplate.require` lets a caller
insist. A text encoder reached from both ``positive`` and ``negative`` is an error (patching one
would overwrite the other). A negative made by ``ConditioningZeroOut`` carries no text: such a
template has a ``prompt`` slot and no ``negative_prompt`` slot (Flux, z-image...).

A template must have a ``prompt`` slot, or the prompt would silently never reach the render
(:meth:`WorkflowTemplate.from_graph` refuses it), unless it is *prompt-free*: nothing in it takes
text (no sampler, no text encoder, no literal ``text``/``prompt`` input: the built-in model-free
template), or a node declares it with ``"_meta": {"tower_prompt_free": true}`` (in a UI export:
the node property ``tower_prompt_free``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy.errors import WorkflowError

SLOTS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "cfg",
    "sampler",
    "width",
    "height",
    "frame_count",
    "reference_image",
    "motion_bucket",
)

#: Text inputs of known encoders; any other node with a literal ``text`` or ``prompt`` input, a
#: ``clip`` link and no conditioning input counts as an encoder too.
TEXT_ENCODERS: dict[str, tuple[str, ...]] = {
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": ("text_g", "text_l"),
    "CLIPTextEncodeSDXLRefiner": ("text",),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl"),
    "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl"),
    "CLIPTextEncodeHunyuanDiT": ("bert", "mt5xl"),
    "CLIPTextEncodeHiDream": ("clip_l", "clip_g", "t5xxl", "llama"),
    "CLIPTextEncodeLumina2": ("user_prompt",),
    "CLIPTextEncodePixArtAlpha": ("text",),
    "TextEncodeHunyuanVideo_ImageToVideo": ("prompt",),
    "TextEncodeQwenImageEdit": ("prompt",),
    "TextEncodeQwenImageEditPlus": ("prompt",),
}
GENERIC_TEXT_INPUTS = ("text", "prompt")
#: Sampler (and guider) inputs that carry each polarity (BasicGuider's is ``conditioning``).
POLARITY_INPUTS: dict[str, tuple[str, ...]] = {"prompt": ("positive", "conditioning"), "negative_prompt": ("negative",)}
#: Guiders whose inputs mean something else: DualCFGGuider weighs ``cond1`` against ``cond2``,
#: and its ``negative`` is often the positive text without the image (image CFG), not a negative.
GUIDER_POLARITIES: dict[str, dict[str, tuple[str, ...]]] = {
    "DualCFGGuider": {"prompt": ("cond1",), "negative_prompt": ("cond2",)},
}
#: Nodes that hold a typed string linked into an encoder, and nodes a string passes through.
STRING_SOURCES = frozenset({"PrimitiveString", "PrimitiveStringMultiline"})
STRING_PASS_THROUGH = {"StringConcatenate": "string_b"}
#: Nodes whose conditioning output carries no text of its input (a negative made of nothing).
ZERO_CONDITIONING = frozenset({"ConditioningZeroOut"})
SEED_INPUTS = ("seed", "noise_seed")
#: Inputs of a sampler's "settings" neighbours (SamplerCustomAdvanced's noise/guider/sigmas).
SAMPLER_PARTS = ("noise", "guider", "sigmas", "sampler")
REFERENCE_LOADERS = ("LoadImage",)
PROMPT_FREE_MARK = "tower_prompt_free"

#: ``sampler_name`` choices of KSampler, KSamplerAdvanced and KSamplerSelect in ComfyUI 0.3.75
#: (``comfy.samplers.KSampler.SAMPLERS``): used when no ``/object_info`` says otherwise.
KNOWN_SAMPLERS: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip
#: Sampler names of other tools (A1111/Forge labels, diffusers-style short forms) -> ComfyUI's,
#: after :func:`comfy_sampler_name` has lower-cased them, dropped a scheduler suffix ("karras"...),
#: written ``++`` as ``pp`` and spaces/dashes as ``_``.
SAMPLER_ALIASES: dict[str, str] = {
    "euler_a": "euler_ancestral",
    "dpm2": "dpm_2",
    "dpm2_a": "dpm_2_ancestral",
    "dpm_2_a": "dpm_2_ancestral",
    "dpmpp_2s_a": "dpmpp_2s_ancestral",
    "unipc": "uni_pc",
    "dpm_solver_multistep": "dpmpp_2m",
    "dpmsolvermultistep": "dpmpp_2m",
    "eulerancestral": "euler_ancestral",
    "euler_ancestral_discrete": "euler_ancestral",
    "euler_discrete": "euler",
    "heun_discrete": "heun",
    "lms_discrete": "lms",
}
SCHEDULER_SUFFIXES = ("karras", "exponential", "sgm_uniform", "simple", "normal", "beta", "ddim_uniform")


@dataclass(frozen=True, slots=True)
class Target:
    node_id: str
    input: str


@dataclass(frozen=True)
class WorkflowTemplate:
    """An API-format graph plus where each slot lives. Immutable: :meth:`patch` returns a copy."""

    name: str
    graph: dict[str, Any] = field(repr=False)
    source_sha256: str
    """Of the template file's canonical JSON: the version part of :attr:`workflow`."""
    slots: dict[str, tuple[Target, ...]] = field(default_factory=dict)
    sampler_choices: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    """node id -> the ``sampler_name`` values its node type accepts (from ``/object_info``); a
    sampler node not listed accepts :data:`KNOWN_SAMPLERS`."""
    limits: dict[Target, tuple[float | None, float | None]] = field(default_factory=dict, repr=False)
    """The declared ``min``/``max`` of numeric slot targets (from ``/object_info``)."""

    @property
    def workflow(self) -> str:
        """Stable name+version for the learning context, e.g. ``comfyui-modelfree-3f2a9c1b7d04``."""
        return f"comfyui-{self.name}-{self.source_sha256[:12]}"

    @classmethod
    def from_graph(
        cls,
        name: str,
        graph: dict[str, Any],
        source_sha256: str | None = None,
        *,
        object_info: dict[str, Any] | None = None,
    ) -> WorkflowTemplate:
        """Check the graph, find its slots; refuse it when the prompt could not reach the render.

        ``object_info`` (the server's, when at hand) gives each sampler node's valid
        ``sampler_name`` choices and the ``min``/``max`` of numeric slots (see :meth:`patch`)."""
        validate_api_graph(graph)
        sha = source_sha256 or canonical_sha256(graph)
        slots = find_slots(graph)
        if not slots.get("prompt") and not is_prompt_free(graph):
            raise WorkflowError(
                f"workflow {name}: no prompt slot: no text encoder (CLIPTextEncode...) feeds a sampler's positive "
                "input, so the prompt would never reach the render; connect one, or mark a node with "
                f'"_meta": {{"{PROMPT_FREE_MARK}": true}} if the template is meant to ignore the prompt'
            )
        choices: dict[str, tuple[str, ...]] = {}
        limits: dict[Target, tuple[float | None, float | None]] = {}
        for slot, targets in slots.items():
            for target in targets:
                spec = _input_spec(object_info, graph[target.node_id]["class_type"], target.input)
                if spec is None:
                    continue
                if slot == "sampler":
                    options = _combo_options(spec)
                    if options is not None:
                        choices[target.node_id] = options
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if spec[0] in ("INT", "FLOAT") and ("min" in opts or "max" in opts):
                    limits[target] = (opts.get("min"), opts.get("max"))
        return cls(name=name, graph=graph, source_sha256=sha, slots=slots, sampler_choices=choices, limits=limits)

    def require(self, *names: str) -> None:
        missing = [n for n in names if not self.slots.get(n)]
        if missing:
            raise WorkflowError(f"workflow {self.workflow} has no {', '.join(missing)} slot")

    def patch(self, values: dict[str, Any]) -> dict[str, Any]:
        """A deep copy of the graph with each given slot's targets set to its value.

        ``sampler`` is Tower's sampler name: mapped to ComfyUI's (:func:`comfy_sampler_name`) and
        set on each sampler node that accepts it; a node that does not keeps the template's. A
        number outside a target's declared range (``SDTurboScheduler`` takes at most 10 steps) is
        not set either: that node keeps the template's value."""
        unknown = set(values) - set(SLOTS)
        if unknown:
            raise WorkflowError(f"unknown slot(s): {', '.join(sorted(unknown))}")
        graph = copy.deepcopy(self.graph)
        for slot, value in values.items():
            if value is None:
                continue
            for target in self.slots.get(slot, ()):
                if slot == "sampler":
                    name = comfy_sampler_name(str(value))
                    if name not in self.sampler_choices.get(target.node_id, KNOWN_SAMPLERS):
                        continue
                    value = name
                elif not _within(value, self.limits.get(target)):
                    continue
                graph[target.node_id]["inputs"][target.input] = value
        return graph


def comfy_sampler_name(name: str) -> str:
    """ComfyUI's ``sampler_name`` for a sampler name of Tower (or A1111, diffusers): ``"Euler a"``
    -> ``euler_ancestral``, ``"DPM++ 2M Karras"`` -> ``dpmpp_2m``; ComfyUI names pass unchanged."""
    key = name.strip().lower().replace("++", "pp")
    key = "_".join(key.replace("-", " ").replace("_", " ").split())
    for suffix in SCHEDULER_SUFFIXES:
        if key.endswith(f"_{suffix}") and key != suffix:
            key = key[: -len(suffix) - 1]
            break
    key = key.removeprefix("k_")
    if key.endswith("_scheduler"):
        key = key[: -len("_scheduler")]
    return SAMPLER_ALIASES.get(key, key)


def is_prompt_free(graph: dict[str, Any]) -> bool:
    """True when a node declares the template prompt-free, or nothing in it takes text."""
    for node in graph.values():
        if (node.get("_meta") or {}).get(PROMPT_FREE_MARK) is True:
            return True
    for node in graph.values():
        inputs = node.get("inputs", {})
        if node["class_type"] in TEXT_ENCODERS or _is_sampler(node):
            return False
        if any(isinstance(inputs.get(name), str) for name in GENERIC_TEXT_INPUTS):
            return False
    return True


def _input_spec(object_info: dict[str, Any] | None, class_type: str, name: str) -> list[Any] | None:
    declared = ((object_info or {}).get(class_type) or {}).get("input") or {}
    spec = (declared.get("required") or {}).get(name) or (declared.get("optional") or {}).get(name)
    return list(spec) if isinstance(spec, (list, tuple)) and spec else None


def _combo_options(spec: list[Any]) -> tuple[str, ...] | None:
    if isinstance(spec[0], list):
        return tuple(str(v) for v in spec[0])
    options = spec[1].get("options") if len(spec) > 1 and isinstance(spec[1], dict) else None
    return tuple(str(v) for v in options) if isinstance(options, list) else None


def _within(value: Any, limits: tuple[float | None, float | None] | None) -> bool:
    if limits is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    low, high = limits
    return (low is None or value >= low) and (high is None or value <= high)


def canonical_sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def validate_api_graph(graph: Any) -> None:
    """Shape check of an API-format graph; links must point at nodes that exist."""
    if not isinstance(graph, dict) or not graph:
        raise WorkflowError("an API-format workflow is a non-empty JSON object of nodes")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"node {node_id!r} has no class_type (is this an API-format export?)")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise WorkflowError(f"node {node_id!r}: inputs must be an object")
        for name, value in inputs.items():
            if _is_link(value) and str(value[0]) not in graph:
                raise WorkflowError(f"node {node_id!r} input {name!r} links to missing node {value[0]!r}")


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _literal(node: dict[str, Any], name: str) -> bool:
    inputs = node.get("inputs", {})
    return name in inputs and not _is_link(inputs[name])


def find_slots(graph: dict[str, Any]) -> dict[str, tuple[Target, ...]]:
    """Where each slot of :data:`SLOTS` lives in ``graph`` (see the module doc for the rules)."""
    found: dict[str, list[Target]] = {slot: [] for slot in SLOTS}

    def add(slot: str, node_id: str, name: str) -> None:
        target = Target(node_id, name)
        if target not in found[slot]:
            found[slot].append(target)

    samplers = [nid for nid, node in graph.items() if _is_sampler(node)]
    for sampler in sorted(samplers, key=_order):
        closure = [sampler] + [
            str(graph[sampler]["inputs"][part][0])
            for part in SAMPLER_PARTS
            if _is_link(graph[sampler]["inputs"].get(part))
        ]
        for nid in closure:
            node = graph[nid]
            for name in SEED_INPUTS:
                if _literal(node, name):
                    add("seed", nid, name)
            for name, slot in (("steps", "steps"), ("cfg", "cfg"), ("sampler_name", "sampler")):
                if _literal(node, name):
                    add(slot, nid, name)
        for slot in POLARITY_INPUTS:
            for nid in closure:
                for polarity in GUIDER_POLARITIES.get(graph[nid]["class_type"], POLARITY_INPUTS)[slot]:
                    link = graph[nid]["inputs"].get(polarity)
                    if _is_link(link):
                        for enc_id, name in _encoders_upstream(graph, link):
                            add(slot, enc_id, name)
        latent = graph[sampler]["inputs"].get("latent_image")
        if _is_link(latent):
            source = _latent_source(graph, str(latent[0]))
            if source is not None:
                _add_size(graph, source, add)
    if not samplers:
        for nid in sorted(graph, key=_order):
            node = graph[nid]
            for name in SEED_INPUTS:
                if _literal(node, name):
                    add("seed", nid, name)
            if _literal(node, "width") and _literal(node, "height"):
                _add_size(graph, nid, add)
    for nid in sorted(graph, key=_order):
        if graph[nid]["class_type"] in REFERENCE_LOADERS and _literal(graph[nid], "image"):
            add("reference_image", nid, "image")
        if _literal(graph[nid], "motion_bucket_id"):
            add("motion_bucket", nid, "motion_bucket_id")
    both = {t.node_id for t in found["prompt"]} & {t.node_id for t in found["negative_prompt"]}
    if both:
        raise WorkflowError(f"text encoder node(s) {sorted(both)} feed both positive and negative")
    return {slot: tuple(targets) for slot, targets in found.items() if targets}


def _is_sampler(node: dict[str, Any]) -> bool:
    inputs = node.get("inputs", {})
    return "latent_image" in inputs and (("positive" in inputs and "negative" in inputs) or "guider" in inputs)


def _add_size(graph: dict[str, Any], nid: str, add: Any) -> None:
    node = graph[nid]
    if _literal(node, "width") and _literal(node, "height"):
        add("width", nid, "width")
        add("height", nid, "height")
    for name in ("length", "batch_size"):
        if _literal(node, name):
            add("frame_count", nid, name)
            break


def _encoders_upstream(graph: dict[str, Any], link: list[Any]) -> list[tuple[str, str]]:
    """Text inputs of the encoders that feed a conditioning link, through conditioning nodes.

    A node with both ``positive`` and ``negative`` inputs (ControlNetApplyAdvanced...) passes
    positive on output 0 and negative on output 1, so only the matching input is followed. A
    ``ConditioningZeroOut`` ends the search: its output holds no text of its input.
    """
    out: list[tuple[str, str]] = []
    seen: set[tuple[str, int]] = set()
    todo: deque[tuple[str, int]] = deque([(str(link[0]), int(link[1]))])
    while todo:
        nid, slot = todo.popleft()
        if (nid, slot) in seen or nid not in graph:
            continue
        seen.add((nid, slot))
        node = graph[nid]
        inputs = node.get("inputs", {})
        if node["class_type"] in ZERO_CONDITIONING:
            continue
        names = TEXT_ENCODERS.get(node["class_type"])
        if names is None and _is_link(inputs.get("clip")) and not any(n.startswith("conditioning") for n in inputs):
            generic = tuple(name for name in GENERIC_TEXT_INPUTS if name in inputs)
            names = generic or None
        if names is not None:
            for name in names:
                if _literal(node, name):
                    out.append((nid, name))
                elif _is_link(inputs.get(name)):
                    out.extend(_text_source(graph, str(inputs[name][0])))
            continue
        if "positive" in inputs and "negative" in inputs:
            follow = ["positive" if slot == 0 else "negative"]
        else:
            follow = [name for name in inputs if name.startswith("conditioning")]
        for name in follow:
            if _is_link(inputs.get(name)):
                todo.append((str(inputs[name][0]), int(inputs[name][1])))
    return out


def _text_source(graph: dict[str, Any], start: str) -> list[tuple[str, str]]:
    """Where the text of a linked encoder input is typed: a string primitive's ``value``, through
    ``StringConcatenate`` to its last part (``string_b``: the usual "fixed prefix + prompt")."""
    nid: str | None = start
    seen: set[str] = set()
    while nid is not None and nid in graph and nid not in seen:
        seen.add(nid)
        node = graph[nid]
        inputs = node.get("inputs", {})
        if node["class_type"] in STRING_SOURCES and _literal(node, "value"):
            return [(nid, "value")]
        link = inputs.get(STRING_PASS_THROUGH.get(node["class_type"], ""))
        nid = str(link[0]) if _is_link(link) else None
    return []


def _latent_source(graph: dict[str, Any], start: str) -> str | None:
    """The first node upstream (through latent-to-latent nodes) with literal width and height."""
    seen: set[str] = set()
    todo: deque[str] = deque([start])
    while todo:
        nid = todo.popleft()
        if nid in seen or nid not in graph:
            continue
        seen.add(nid)
        node = graph[nid]
        if _literal(node, "width") and _literal(node, "height"):
            return nid
        # ``pixels``: an img2img latent is VAEEncode of an image whose size a node upstream sets.
        for name in ("samples", "latent", "latent_image", "samples1", "samples2", "pixels", "image"):
            value = node.get("inputs", {}).get(name)
            if _is_link(value):
                todo.append(str(value[0]))
    return None


def _order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if str(node_id).isdigit() else (1 << 62, str(node_id))


# -- template files -------------------------------------------------------------------------------

BUILTIN_DIR = Path(__file__).with_name("templates")
BUILTIN_TEMPLATE = BUILTIN_DIR / "modelfree.json"


def read_template_file(path: Path) -> tuple[str, dict[str, Any], str]:
    """``(name, data, sha256)`` of a template file; ``data`` is API or UI format, not yet checked."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow {path}: {exc}") from exc
    except ValueError as exc:
        raise WorkflowError(f"workflow {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WorkflowError(f"workflow {path} is not a JSON object")
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(path).stem) or "workflow"
    return name, data, canonical_sha256(data)


def workflow_name(path: Path | None) -> str:
    """The ``workflow`` string of a template file without loading it into a backend."""
    name, _, sha = read_template_file(path or BUILTIN_TEMPLATE)
    return f"comfyui-{name}-{sha[:12]}"
