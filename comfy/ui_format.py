"""Convert a ComfyUI UI-format export ("Save" in the editor) to the API format the server runs.

The conversion does what ComfyUI's own frontend does when it queues a workflow (``graphToPrompt``
of ComfyUI_frontend 1.32, the one ComfyUI 0.3.75 ships), so a template gives the server the same
graph as pressing "Run" in the editor. The UI format keeps widget values as a positional list
(``widgets_values``) and connections as a separate ``links`` table; the API format needs input
names. The names and their order come from the server's ``/object_info`` (``input_order``, else the
order of ``input``), so conversion needs a server. What is supported:

* widget values as a list or a name->value object; the editor-only helper values stored between
  them are skipped: ``control_after_generate`` after a seed (or any input that declares it), the
  upload button after an image/video picker (``"image"``: real exports store that for
  ``LoadVideo`` too) and the two empty audio widgets after an audio picker (``LoadAudio``);
  trailing empty values of editor-only widgets (``Preview3D``) are ignored;
* **subgraphs** (``definitions.subgraphs``): every instance is flattened into its inner nodes, with
  the frontend's ids ``<instance id>:<inner id>`` (nested: ``a:b:c``); an inner input fed by the
  subgraph's input takes what feeds the instance's input outside, or else the instance's promoted
  widget value (``widgets_values`` in input order, by name where ``properties.proxyWidgets``
  says so), or else keeps its own widget value;
* **bypassed nodes** (mode 4): left out, and a link from one is passed through to the upstream of
  its input of the matching type (the output's slot if that input's type fits, else the first
  input of the wanted type, else the first compatible one; nothing when none matches);
* **muted nodes** (mode 2, "never"): left out, and inputs linked to them left unset;
* frontend-only nodes: ``Reroute`` (followed to the real source), ``PrimitiveNode`` (its value
  written into the widgets it feeds), ``Note``/``MarkdownNote`` (dropped); groups ignored.

Refused with a :class:`~comfy.errors.WorkflowError` that says so: legacy group nodes, node types
the server does not have, widget lists that do not match the node's inputs, links that point
nowhere, and cycles through reroutes, bypasses or subgraphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfy.errors import WorkflowError

FRONTEND_ONLY_DROPPED = frozenset({"Note", "MarkdownNote"})
VIRTUAL_NODES = frozenset({"Reroute", "PrimitiveNode"}) | FRONTEND_ONLY_DROPPED
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
#: Input types the frontend draws as widgets through its own extensions (their value is stored).
FRONTEND_WIDGET_TYPES = frozenset({"WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION", "AUDIO_RECORD", "IMAGEUPLOAD"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
#: Upload flag -> (how many helper values may follow the picker's value, what they may be).
UPLOAD_HELPERS: dict[str, tuple[int, tuple[Any, ...]]] = {
    "image_upload": (1, ("image",)),
    "video_upload": (1, ("image", "video")),
    "audio_upload": (2, (None, "", "audio")),
}
MODE_MUTED, MODE_BYPASS = 2, 4
SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE = -10, -20
MAX_SUBGRAPH_DEPTH = 16
PROMPT_FREE_MARK = "tower_prompt_free"


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


@dataclass(frozen=True, slots=True)
class _Link:
    origin_id: int
    origin_slot: int
    target_id: int
    type: Any


@dataclass
class _Scope:
    """One graph level: the root, or one subgraph instance (its definition, seen from the instance)."""

    path: tuple[str, ...]
    nodes: dict[int, dict[str, Any]]
    links: dict[int, _Link]
    parent: _Scope | None = None
    instance: dict[str, Any] | None = None
    definition: dict[str, Any] | None = None
    promoted: dict[str, Any] = field(default_factory=dict)
    children: dict[int, _Scope] = field(default_factory=dict)

    def exec_id(self, node_id: int) -> str:
        return ":".join((*self.path, str(node_id)))


_Resolved = tuple[str, Any, Any] | None  # ("node", exec id, slot) | ("value", v, None) | None


def ui_to_api(ui: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """The API-format graph of a UI export (see the module doc for what is supported)."""
    return _Converter(ui, object_info).run()


class _Converter:
    def __init__(self, ui: dict[str, Any], object_info: dict[str, Any]) -> None:
        self.ui = ui
        self.object_info = object_info
        self.definitions = _subgraph_definitions(ui)
        # (scope path, node id) -> widget name -> value written by a PrimitiveNode.
        self.primitive_values: dict[tuple[tuple[str, ...], int], dict[str, Any]] = {}

    def run(self) -> dict[str, Any]:
        _refuse_unsupported(self.ui)
        root = _Scope(path=(), nodes=_nodes(self.ui.get("nodes") or []), links=_links(self.ui.get("links") or []))
        scopes = self._expand(root, depth=0, stack=())
        for scope in scopes:
            self._apply_primitives(scope)
        graph: dict[str, Any] = {}
        for scope in scopes:
            for node_id in sorted(scope.nodes):
                node = scope.nodes[node_id]
                kind = node.get("type")
                if kind in VIRTUAL_NODES or kind in self.definitions:
                    continue
                if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
                    continue
                graph[scope.exec_id(node_id)] = self._api_node(scope, node_id, node)
        # As the frontend does: a link to a node that is not in the prompt (muted) is dropped.
        for node in graph.values():
            for name, value in list(node["inputs"].items()):
                if _is_link(value) and value[0] not in graph:
                    del node["inputs"][name]
        if not graph:
            raise WorkflowError("the UI workflow has no executable nodes")
        return graph

    # -- structure -------------------------------------------------------------------------------

    def _expand(self, scope: _Scope, depth: int, stack: tuple[str, ...]) -> list[_Scope]:
        """``scope`` and every subgraph instance scope below it (depth first)."""
        out = [scope]
        for node_id in sorted(scope.nodes):
            node = scope.nodes[node_id]
            kind = node.get("type")
            if kind not in self.definitions:
                continue
            if kind in stack or depth >= MAX_SUBGRAPH_DEPTH:
                raise WorkflowError(f"subgraph {kind} contains itself (node {scope.exec_id(node_id)})")
            definition = self.definitions[kind]
            child = _Scope(
                path=(*scope.path, str(node_id)),
                nodes=_nodes(definition.get("nodes") or []),
                links=_links(definition.get("links") or []),
                parent=scope,
                instance=node,
                definition=definition,
            )
            child.promoted = self._promoted_values(child)
            scope.children[node_id] = child
            out.extend(self._expand(child, depth + 1, (*stack, kind)))
        return out

    def _promoted_values(self, scope: _Scope) -> dict[str, Any]:
        """The instance's widget values by subgraph input name (the frontend's promoted widgets)."""
        definition, instance = scope.definition or {}, scope.instance or {}
        names = []
        for sub_input in definition.get("inputs") or []:
            for link_id in sub_input.get("linkIds") or []:
                link = scope.links.get(int(link_id))
                target = scope.nodes.get(link.target_id) if link else None
                entry = _entry_with_link(target, int(link_id)) if target else None
                if entry is not None and entry.get("widget"):
                    names.append(str(sub_input.get("name")))
                    break
        values = instance.get("widgets_values")
        promoted: dict[str, Any] = {}
        if isinstance(values, dict):
            return {name: values[name] for name in names if name in values}
        values = list(values or [])
        for name, value in zip(names, values, strict=False):
            promoted[name] = value
        proxies = (instance.get("properties") or {}).get("proxyWidgets")
        if isinstance(proxies, list):
            for proxy, value in zip(proxies, values, strict=False):
                if (
                    isinstance(proxy, (list, tuple))
                    and len(proxy) == 2
                    and str(proxy[0]) == "-1"
                    and proxy[1] in names
                    and value is not None
                ):
                    promoted[str(proxy[1])] = value
        return promoted

    def _apply_primitives(self, scope: _Scope) -> None:
        """A PrimitiveNode writes its value into the widget of every input it feeds."""
        for node in scope.nodes.values():
            if node.get("type") != "PrimitiveNode":
                continue  # (the frontend applies a primitive whatever its mode)
            values = node.get("widgets_values") or []
            if not values:
                raise WorkflowError(f"primitive node {scope.exec_id(int(node['id']))} has no value")
            for output in node.get("outputs") or []:
                for link_id in output.get("links") or []:
                    link = scope.links.get(int(link_id))
                    target = scope.nodes.get(link.target_id) if link else None
                    entry = _entry_with_link(target, int(link_id)) if target else None
                    if entry is not None:
                        name = _widget_name(entry)
                        self.primitive_values.setdefault((scope.path, link.target_id), {})[name] = values[0]

    # -- one node --------------------------------------------------------------------------------

    def _api_node(self, scope: _Scope, node_id: int, node: dict[str, Any]) -> dict[str, Any]:
        kind = node.get("type")
        exec_id = scope.exec_id(node_id)
        info = self.object_info.get(kind)
        if info is None:
            raise WorkflowError(f"node {exec_id}: type {kind!r} is not installed on the server")
        inputs = _widget_inputs(exec_id, node, info)
        widgets = {name for name, kind, opts in _input_specs(info) if _is_widget(kind, opts)}
        for name, value in self.primitive_values.get((scope.path, node_id), {}).items():
            if name in widgets:
                inputs[name] = _wrap(value)
        for entry in node.get("inputs") or []:
            if entry.get("link") is None:
                continue
            source = self._resolve_input(scope, node, entry, None, set())
            if source is None:
                continue  # nothing upstream: a widget keeps its value, a socket stays unset
            name = str(entry.get("name"))
            if source[0] == "value":
                inputs[name] = _wrap(source[1])
            else:
                inputs[name] = [source[1], source[2]]
        meta: dict[str, Any] = {"title": node.get("title") or kind}
        if (node.get("properties") or {}).get(PROMPT_FREE_MARK) is True:
            meta[PROMPT_FREE_MARK] = True  # the template declares it ignores the prompt (comfy.workflow)
        return {"class_type": kind, "inputs": inputs, "_meta": meta}

    # -- link resolution (the frontend's ExecutableNodeDTO.resolveInput / resolveOutput) ---------

    def _resolve_input(
        self, scope: _Scope, node: dict[str, Any], entry: dict[str, Any], wanted: Any, seen: set[Any]
    ) -> _Resolved:
        link_id = entry.get("link")
        if link_id is None:
            return None
        link = scope.links.get(int(link_id))
        if link is None:
            raise WorkflowError(f"node {scope.exec_id(int(node['id']))}: link {link_id} is referenced but not defined")
        wanted = wanted if wanted is not None else entry.get("type")
        if link.origin_id == SUBGRAPH_INPUT_NODE and scope.parent is not None:
            return self._from_subgraph_input(scope, link.origin_slot, seen)
        origin = scope.nodes.get(link.origin_id)
        if origin is None:
            raise WorkflowError(f"link {link_id} starts at missing node {scope.exec_id(link.origin_id)}")
        return self._resolve_output(scope, origin, link.origin_slot, wanted, seen)

    def _from_subgraph_input(self, scope: _Scope, slot: int, seen: set[Any]) -> _Resolved:
        sub_inputs = (scope.definition or {}).get("inputs") or []
        if not 0 <= slot < len(sub_inputs):
            raise WorkflowError(f"subgraph instance {':'.join(scope.path)} has no input {slot}")
        name = str(sub_inputs[slot].get("name"))
        instance = scope.instance or {}
        outer = next((i for i in instance.get("inputs") or [] if i.get("name") == name), None)
        if outer is not None and outer.get("link") is not None and scope.parent is not None:
            return self._resolve_input(scope.parent, instance, outer, None, seen)
        if name in scope.promoted:
            return ("value", scope.promoted[name], None)
        return None

    def _resolve_output(
        self, scope: _Scope, node: dict[str, Any], slot: int, wanted: Any, seen: set[Any]
    ) -> _Resolved:
        node_id = int(node["id"])
        key = (scope.path, node_id, slot)
        if key in seen:
            raise WorkflowError(f"cycle through node {scope.exec_id(node_id)} while following links")
        seen.add(key)
        kind = node.get("type")
        if node.get("mode", 0) == MODE_BYPASS:
            entry = self._bypass_input(scope, node, slot, wanted)
            return None if entry is None else self._resolve_input(scope, node, entry, None, seen)
        if kind in self.definitions:
            return self._from_subgraph_output(scope.children[node_id], slot, wanted, seen)
        if kind == "Reroute":
            entry = next(iter(node.get("inputs") or []), None)
            return None if entry is None else self._resolve_input(scope, node, entry, wanted, seen)
        if kind in VIRTUAL_NODES:
            return None  # a PrimitiveNode's value was written into the widgets it feeds
        return ("node", scope.exec_id(node_id), slot)

    def _from_subgraph_output(self, child: _Scope, slot: int, wanted: Any, seen: set[Any]) -> _Resolved:
        outputs = (child.definition or {}).get("outputs") or []
        if not 0 <= slot < len(outputs):
            raise WorkflowError(f"subgraph instance {':'.join(child.path)} has no output {slot}")
        link_ids = outputs[slot].get("linkIds") or []
        link = child.links.get(int(link_ids[0])) if link_ids else None
        if link is None:
            return None
        if link.origin_id == SUBGRAPH_INPUT_NODE:
            return self._from_subgraph_input(child, link.origin_slot, seen)
        origin = child.nodes.get(link.origin_id)
        if origin is None:
            raise WorkflowError(f"subgraph {':'.join(child.path)}: output {slot} comes from missing node {link.origin_id}")
        return self._resolve_output(child, origin, link.origin_slot, wanted, seen)

    def _bypass_input(self, scope: _Scope, node: dict[str, Any], slot: int, wanted: Any) -> dict[str, Any] | None:
        """The input a bypassed node passes to its output ``slot`` (the frontend's type matching)."""
        inputs = self._full_inputs(node)
        outputs = node.get("outputs") or []
        out_type = outputs[slot].get("type") if 0 <= slot < len(outputs) else None
        if wanted in ("*", "", None):
            index = slot if len(inputs) > slot else 0
            return inputs[index] if index < len(inputs) else None
        if slot < len(inputs):
            candidate = inputs[slot]
            if _compatible(candidate.get("type"), out_type) and _compatible(candidate.get("type"), wanted):
                return candidate
        for candidate in inputs:
            if candidate.get("type") == wanted:
                return candidate
        for candidate in inputs:
            if _compatible(candidate.get("type"), out_type) and _compatible(candidate.get("type"), wanted):
                return candidate
        return None

    def _full_inputs(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """The node's input slots as the frontend holds them: every declared input in order (saved
        files leave out unlinked widget inputs), with the saved entries merged in by name."""
        saved = {str(e.get("name")): e for e in node.get("inputs") or []}
        kind = node.get("type")
        if kind in self.definitions:
            declared = [(str(i.get("name")), i.get("type")) for i in self.definitions[kind].get("inputs") or []]
        elif kind in self.object_info:
            declared = [(name, "COMBO" if isinstance(t, list) else t) for name, t, _ in _input_specs(self.object_info[kind])]
        else:
            declared = []
        out = [saved.get(name, {"name": name, "type": kind_, "link": None}) for name, kind_ in declared]
        names = {name for name, _ in declared}
        out.extend(e for e in node.get("inputs") or [] if str(e.get("name")) not in names)
        return out


# -- helpers ----------------------------------------------------------------------------------------


def _refuse_unsupported(ui: dict[str, Any]) -> None:
    if (ui.get("extra") or {}).get("groupNodes"):
        raise WorkflowError("the UI workflow uses legacy group nodes, which are not supported; convert them to subgraphs")
    for node in ui.get("nodes") or []:
        kind = str(node.get("type", ""))
        if kind.startswith(("workflow>", "workflow/")):
            raise WorkflowError(f"node {node.get('id')} is a legacy group node ({kind}); not supported")


def _subgraph_definitions(ui: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    todo = list((ui.get("definitions") or {}).get("subgraphs") or [])
    while todo:
        definition = todo.pop()
        if isinstance(definition, dict) and definition.get("id") is not None and str(definition["id"]) not in found:
            found[str(definition["id"])] = definition
            todo.extend((definition.get("definitions") or {}).get("subgraphs") or [])
    return found


def _nodes(raw: list[Any]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for node in raw:
        if not isinstance(node, dict) or "id" not in node:
            raise WorkflowError("a node of the UI workflow has no id")
        out[int(node["id"])] = node
    return out


def _links(raw: list[Any]) -> dict[int, _Link]:
    """link id -> link. Both the array form (root graphs) and the object form (subgraphs) exist."""
    out: dict[int, _Link] = {}
    for link in raw:
        if isinstance(link, list) and len(link) >= 5:
            out[int(link[0])] = _Link(int(link[1]), int(link[2]), int(link[3]), link[5] if len(link) > 5 else None)
        elif isinstance(link, dict):
            out[int(link["id"])] = _Link(
                int(link["origin_id"]), int(link["origin_slot"]), int(link["target_id"]), link.get("type")
            )
    return out


def _entry_with_link(node: dict[str, Any], link_id: int) -> dict[str, Any] | None:
    return next((e for e in node.get("inputs") or [] if e.get("link") == link_id), None)


def _widget_name(entry: dict[str, Any]) -> str:
    widget = entry.get("widget")
    if isinstance(widget, dict) and widget.get("name"):
        return str(widget["name"])
    return str(entry.get("name"))


def _compatible(a: Any, b: Any) -> bool:
    """LiteGraph's isValidConnection: ``*``/empty match anything; comma lists match on overlap."""
    if a in ("", "*", None, 0) or b in ("", "*", None, 0) or a == b:
        return True
    left, right = str(a).lower(), str(b).lower()
    if "," not in left and "," not in right:
        return left == right
    return any(_compatible(x, y) for x in left.split(",") for y in right.split(","))


def _is_marker(value: Any, markers: Any) -> bool:
    return (value is None or isinstance(value, str)) and value in markers


def _wrap(value: Any) -> Any:
    """A list value is sent as ``{"__value__": [...]}``: a bare list would read as a link."""
    return {"__value__": value} if isinstance(value, list) else value


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


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


def _sends_progress_text(info: dict[str, Any]) -> bool:
    """A node with the hidden ``unique_id`` input can show a progress text the editor saves."""
    return "unique_id" in ((info.get("input") or {}).get("hidden") or {})


def _is_widget(kind: Any, opts: dict[str, Any]) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind in FRONTEND_WIDGET_TYPES


def _widget_inputs(node_id: str, node: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
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
        value = values[position]
        if isinstance(kind, str) and kind in FRONTEND_WIDGET_TYPES and value is None:
            position += 1
            continue
        out[name] = _wrap(value)
        position += 1
        control = opts.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed"))
        if control and position < len(values) and _is_marker(values[position], CONTROL_VALUES):
            position += 1
        for flag, (most, markers) in UPLOAD_HELPERS.items():
            if opts.get(flag):
                for _ in range(most):
                    if position < len(values) and _is_marker(values[position], markers):
                        position += 1
    left = [value for value in values[position:] if value not in (None, "")]
    if left and not (len(left) == 1 and isinstance(left[0], str) and _sends_progress_text(info)):
        # Left-over values mean the node's widgets changed since the export: values would land on
        # the wrong inputs. Empty ones belong to editor-only widgets (Preview3D's viewer); one
        # string, to the text a node can show while it runs (GetImageSize's size), kept by the editor.
        raise WorkflowError(
            f"node {node_id} ({node.get('type')}): {len(values)} widget value(s) but only {position} used; "
            "the export does not match this server's node definition"
        )
    return out
