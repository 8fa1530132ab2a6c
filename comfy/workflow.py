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
``width``,          the latent (or image) source upstream of the sampler's ``latent_image``
``height``          (``EmptyLatentImage``, the ``Empty*LatentVideo`` nodes...); with no sampler,
                    every node with literal ``width`` and ``height`` inputs (``EmptyImage``)
``frame_count``     that source's ``length`` (video latents) or else ``batch_size``
``reference_image`` the ``image`` input of ``LoadImage`` nodes (a character reference)
==================  ===========================================================================

A slot a template does not have is simply absent (:attr:`WorkflowTemplate.slots`); patching a
value for an absent slot is ignored, except that :meth:`WorkflowTemplate.require` lets a caller
insist. A text encoder reached from both ``positive`` and ``negative`` is an error (patching one
would overwrite the other).
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
    "width",
    "height",
    "frame_count",
    "reference_image",
)

#: Text inputs of known encoders; any other node with a literal ``text`` input and a ``clip``
#: link counts as an encoder too.
TEXT_ENCODERS: dict[str, tuple[str, ...]] = {
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": ("text_g", "text_l"),
    "CLIPTextEncodeSDXLRefiner": ("text",),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl"),
    "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl"),
    "CLIPTextEncodeHunyuanDiT": ("bert", "mt5xl"),
    "TextEncodeHunyuanVideo_ImageToVideo": ("prompt",),
}
SEED_INPUTS = ("seed", "noise_seed")
#: Inputs of a sampler's "settings" neighbours (SamplerCustomAdvanced's noise/guider/sigmas).
SAMPLER_PARTS = ("noise", "guider", "sigmas", "sampler")
REFERENCE_LOADERS = ("LoadImage",)


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

    @property
    def workflow(self) -> str:
        """Stable name+version for the learning context, e.g. ``comfyui-modelfree-3f2a9c1b7d04``."""
        return f"comfyui-{self.name}-{self.source_sha256[:12]}"

    @classmethod
    def from_graph(cls, name: str, graph: dict[str, Any], source_sha256: str | None = None) -> WorkflowTemplate:
        validate_api_graph(graph)
        sha = source_sha256 or canonical_sha256(graph)
        return cls(name=name, graph=graph, source_sha256=sha, slots=find_slots(graph))

    def require(self, *names: str) -> None:
        missing = [n for n in names if not self.slots.get(n)]
        if missing:
            raise WorkflowError(f"workflow {self.workflow} has no {', '.join(missing)} slot")

    def patch(self, values: dict[str, Any]) -> dict[str, Any]:
        """A deep copy of the graph with each given slot's targets set to its value."""
        unknown = set(values) - set(SLOTS)
        if unknown:
            raise WorkflowError(f"unknown slot(s): {', '.join(sorted(unknown))}")
        graph = copy.deepcopy(self.graph)
        for slot, value in values.items():
            if value is None:
                continue
            for target in self.slots.get(slot, ()):
                graph[target.node_id]["inputs"][target.input] = value
        return graph


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

    samplers = [
        nid
        for nid, node in graph.items()
        if "latent_image" in node.get("inputs", {})
        and (("positive" in node["inputs"] and "negative" in node["inputs"]) or "guider" in node["inputs"])
    ]
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
            for name, slot in (("steps", "steps"), ("cfg", "cfg")):
                if _literal(node, name):
                    add(slot, nid, name)
        for polarity, slot in (("positive", "prompt"), ("negative", "negative_prompt")):
            for nid in closure:
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
    both = {t.node_id for t in found["prompt"]} & {t.node_id for t in found["negative_prompt"]}
    if both:
        raise WorkflowError(f"text encoder node(s) {sorted(both)} feed both positive and negative")
    return {slot: tuple(targets) for slot, targets in found.items() if targets}


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
    positive on output 0 and negative on output 1, so only the matching input is followed.
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
        names = TEXT_ENCODERS.get(node["class_type"])
        if names is None and _literal(node, "text") and _is_link(inputs.get("clip")):
            names = ("text",)
        if names is not None:
            out.extend((nid, name) for name in names if _literal(node, name))
            continue
        if "positive" in inputs and "negative" in inputs:
            follow = ["positive" if slot == 0 else "negative"]
        else:
            follow = [name for name in inputs if name.startswith("conditioning")]
        for name in follow:
            if _is_link(inputs.get(name)):
                todo.append((str(inputs[name][0]), int(inputs[name][1])))
    return out


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
        for name in ("samples", "latent", "latent_image", "samples1", "samples2"):
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
