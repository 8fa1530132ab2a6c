"""Convert a ComfyUI UI-format export ("Save" in the editor) to the API format the server runs.

The UI format keeps widget values as a positional list (``widgets_values``) and connections as a
separate ``links`` table; the API format needs input names. The names and their order come from
the server's ``/object_info`` (``input_order``, else the order of ``input``), so conversion needs
a server. What is supported:

* flat graphs of installed node types, widget values as a list or a name->value object;
* the editor-only helper widgets stored between values (``control_after_generate`` after a seed,
  the ``upload`` button value after an image/video/audio picker), skipped;
* frontend-only nodes: ``Reroute`` (followed to the real source), ``PrimitiveNode`` (its value is
  inlined), ``Note``/``MarkdownNote`` (dropped); visual groups (ignored);
* muted nodes (mode 2, "never"): dropped, and inputs linked to them left unset.

Refused with a :class:`~comfy.errors.WorkflowError` that says so: subgraphs, legacy group nodes,
bypassed nodes (mode 4), node types the server does not have, and widget lists that do not match
the node's inputs.
"""

from __future__ import annotations

from typing import Any

from comfy.errors import WorkflowError

FRONTEND_ONLY_DROPPED = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
UPLOAD_FLAGS = {"image_upload": "image", "video_upload": "video", "audio_upload": "audio"}
MODE_MUTED, MODE_BYPASS = 2, 4


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def ui_to_api(ui: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """The API-format graph of a UI export (see the module doc for what is supported)."""
    _refuse_unsupported(ui)
    nodes = {int(node["id"]): node for node in ui["nodes"]}
    links = _links(ui.get("links") or [])
    graph: dict[str, Any] = {}
    for node_id in sorted(nodes):
        node = nodes[node_id]
        kind = node.get("type")
        if kind in FRONTEND_ONLY_DROPPED or kind in ("Reroute", "PrimitiveNode"):
            continue
        mode = node.get("mode", 0)
        if mode == MODE_BYPASS:
            raise WorkflowError(f"node {node_id} ({kind}) is bypassed; bypass is not supported, remove or enable it")
        if mode == MODE_MUTED:
            continue
        info = object_info.get(kind)
        if info is None:
            raise WorkflowError(f"node {node_id}: type {kind!r} is not installed on the server")
        inputs = _widget_inputs(node_id, node, info)
        for entry in node.get("inputs") or []:
            link_id = entry.get("link")
            if link_id is None:
                continue
            source = _resolve(link_id, links, nodes, set())
            if source is None:
                inputs.pop(entry["name"], None)  # linked to a muted node: leave it unset
            elif source[0] == "value":
                inputs[entry["name"]] = source[1]
            else:
                inputs[entry["name"]] = [str(source[1]), source[2]]
        graph[str(node_id)] = {"class_type": kind, "inputs": inputs, "_meta": {"title": node.get("title") or kind}}
    if not graph:
        raise WorkflowError("the UI workflow has no executable nodes")
    return graph


def _refuse_unsupported(ui: dict[str, Any]) -> None:
    definitions = ui.get("definitions") or {}
    subgraph_ids = {str(s.get("id")) for s in definitions.get("subgraphs", []) or [] if isinstance(s, dict)}
    if subgraph_ids:
        raise WorkflowError("the UI workflow uses subgraphs, which are not supported; export it in API format")
    if (ui.get("extra") or {}).get("groupNodes"):
        raise WorkflowError("the UI workflow uses group nodes, which are not supported; convert them to nodes")
    for node in ui["nodes"]:
        kind = str(node.get("type", ""))
        if kind.startswith(("workflow>", "workflow/")):
            raise WorkflowError(f"node {node.get('id')} is a group node ({kind}); not supported")


def _links(raw: list[Any]) -> dict[int, tuple[int, int]]:
    """link id -> (origin node id, origin slot). Both the array and the object forms exist."""
    out: dict[int, tuple[int, int]] = {}
    for link in raw:
        if isinstance(link, list) and len(link) >= 5:
            out[int(link[0])] = (int(link[1]), int(link[2]))
        elif isinstance(link, dict):
            out[int(link["id"])] = (int(link["origin_id"]), int(link["origin_slot"]))
    return out


def _resolve(
    link_id: int, links: dict[int, tuple[int, int]], nodes: dict[int, Any], seen: set[int]
) -> tuple[str, Any, Any] | None:
    """The real source of a link: ``("node", id, slot)``, ``("value", v, None)`` or ``None`` (muted)."""
    if link_id not in links:
        raise WorkflowError(f"link {link_id} is referenced but not defined")
    origin, slot = links[link_id]
    node = nodes.get(origin)
    if node is None:
        raise WorkflowError(f"link {link_id} starts at missing node {origin}")
    if origin in seen:
        raise WorkflowError(f"reroute cycle through node {origin}")
    kind = node.get("type")
    if kind == "Reroute":
        upstream = next((i.get("link") for i in node.get("inputs") or [] if i.get("link") is not None), None)
        if upstream is None:
            raise WorkflowError(f"reroute node {origin} has no input")
        return _resolve(upstream, links, nodes, seen | {origin})
    if kind == "PrimitiveNode":
        values = node.get("widgets_values") or []
        if not values:
            raise WorkflowError(f"primitive node {origin} has no value")
        return ("value", values[0], None)
    if node.get("mode", 0) == MODE_MUTED:
        return None
    if node.get("mode", 0) == MODE_BYPASS:
        raise WorkflowError(f"node {origin} ({kind}) is bypassed; bypass is not supported")
    return ("node", origin, slot)


def _input_specs(info: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    specs: list[tuple[str, Any, dict[str, Any]]] = []
    declared = info.get("input") or {}
    order = info.get("input_order") or {}
    for section in ("required", "optional"):
        names = order.get(section) or list((declared.get(section) or {}).keys())
        for name in names:
            spec = (declared.get(section) or {}).get(name)
            if spec is None:
                continue
            kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            opts = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append((name, kind, opts))
    return specs


def _is_widget(kind: Any, opts: dict[str, Any]) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _widget_inputs(node_id: int, node: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    values = node.get("widgets_values")
    widgets = [(name, kind, opts) for name, kind, opts in _input_specs(info) if _is_widget(kind, opts)]
    if values is None:
        values = []
    if isinstance(values, dict):
        return {name: values[name] for name, _, _ in widgets if name in values}
    out: dict[str, Any] = {}
    position = 0
    for name, kind, opts in widgets:
        if position >= len(values):
            # Widgets converted to sockets in old exports have no value; a link must supply them.
            linked = any(i.get("name") == name and i.get("link") is not None for i in node.get("inputs") or [])
            if linked:
                continue
            raise WorkflowError(
                f"node {node_id} ({node.get('type')}): no value for widget {name!r}; "
                f"{len(values)} value(s) for {len(widgets)} widget(s)"
            )
        out[name] = values[position]
        position += 1
        control = opts.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed"))
        if control and position < len(values) and values[position] in CONTROL_VALUES:
            position += 1
        for flag, marker in UPLOAD_FLAGS.items():
            if opts.get(flag) and position < len(values) and values[position] == marker:
                position += 1
    if position != len(values):
        # Left-over values mean the node's widgets changed since the export: values would land on
        # the wrong inputs.
        raise WorkflowError(
            f"node {node_id} ({node.get('type')}): {len(values)} widget value(s) but only {position} used; "
            "the export does not match this server's node definition"
        )
    return out
