"""Every official workflow template shipped with the installed ComfyUI, through Tower, on a REAL
ComfyUI 0.3.75 (see conftest.py).

The templates are the ``comfyui-workflow-templates`` packages ComfyUI installs (in its venv:
``comfyui_workflow_templates_media_*/templates/*.json``; the ``index*.json`` files are catalogues,
not workflows). Each one is converted from the UI format with the server's ``/object_info``
(:func:`comfy.ui_format.ui_to_api`), loaded as a template (slots, the prompt requirement), patched
with a refined attempt's values like the backend does, and submitted with ``POST /prompt``. The
server validates without models: a loader naming a model it lacks is a 400 that Tower classifies as
:class:`~comfy.errors.ModelMissing`. The input files the templates name are uploaded as
placeholders first (validation only checks that they exist), and a slow prompt holds the queue
while the templates are submitted, so an accepted one is dequeued before it could run.

Outcomes are counted and printed (``pytest -s``); the test fails, listing them, when a template
fails for a structural reason of ours: a conversion error on a template that uses only installed
nodes, a "no prompt slot" refusal of a graph that has a text encoder, or a server validation error
that is not a missing model or input file.

A second test loads each template that uses only installed nodes into ComfyUI's own frontend (the
one the server serves, in Debian's ``chromium`` through Playwright; skipped without them) and
checks that ``app.graphToPrompt()`` gives the same API graph as our conversion: same node ids and
types, same value or link on every input the node declares.

``TOWER_COMFY_EXTRA_TEMPLATES`` (a folder of template JSON files, e.g. the newest
``comfyui-workflow-templates-json`` wheel unpacked) adds more, counted apart and only reported:
templates newer than the server may use node definitions 0.3.75 does not have.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from comfy.client import ComfyClient
from comfy.errors import ModelMissing, ValidationFailed, WorkflowError
from comfy.ui_format import VIRTUAL_NODES, is_ui_format, ui_to_api
from comfy.workflow import TEXT_ENCODERS, WorkflowTemplate

pytestmark = [pytest.mark.comfyui, pytest.mark.integration]

CACHE_DIR = Path(os.environ.get("TOWER_CACHE_DIR", Path.home() / ".cache" / "tower"))
VENV = Path(os.environ.get("TOWER_COMFY_VENV", CACHE_DIR / "comfyui-venv"))
#: What a refined attempt puts into the slots (the backend's patch).
ATTEMPT = {"prompt": "Kai faces the dragon, anime style", "negative_prompt": "blurry", "seed": 1234, "steps": 12,
           "cfg": 6.5, "sampler": "euler_ancestral", "width": 512, "height": 288, "frame_count": 9}
MEDIA_FLAGS = ("image_upload", "video_upload", "audio_upload")
#: Problems that mean "this server lacks a file", not "the graph is wrong".
MISSING_FILE_TYPES = ("value_not_in_list", "custom_validation_failed")


def official_templates() -> list[Path]:
    found = sorted(VENV.glob("lib/python*/site-packages/comfyui_workflow_templates_media_*/templates/*.json"))
    return [path for path in found if not path.name.startswith("index")]


def extra_templates() -> list[Path]:
    folder = os.environ.get("TOWER_COMFY_EXTRA_TEMPLATES")
    if not folder:
        return []
    return sorted(p for p in Path(folder).rglob("*.json") if not p.name.startswith("index"))


@dataclass
class Outcome:
    name: str
    kind: str  # see KINDS
    detail: str = ""


KINDS = {
    "not-installed": "refused: uses node types the server lacks",
    "no-prompt": "refused: takes no text (no prompt slot)",
    "not-ui": "refused: not a UI-format workflow",
    "conversion-error": "FAILED: conversion error (only installed nodes)",
    "template-error": "FAILED: template error",
    "accepted": "server: accepted (dequeued before running)",
    "partial": "server: 200 with node_errors: only preview outputs valid, models missing",
    "model-missing": "server: 400, models missing (ModelMissing)",
    "file-missing": "server: 400, models and input files missing",
    "invalid": "FAILED: server validation error",
}
FAILURES = {"conversion-error", "template-error", "invalid"}


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)


def node_types(ui: dict[str, Any]) -> set[str]:
    """Every node type of a UI workflow that runs (not muted or bypassed), subgraphs included."""
    definitions = [d for d in (ui.get("definitions") or {}).get("subgraphs") or [] if isinstance(d, dict)]
    ids = {str(d.get("id")) for d in definitions}
    nodes = list(ui.get("nodes") or []) + [n for d in definitions for n in d.get("nodes") or []]
    return {str(n.get("type")) for n in nodes if n.get("mode", 0) not in (2, 4)} - ids - VIRTUAL_NODES


def has_text_encoder(graph: dict[str, Any]) -> bool:
    return any(n["class_type"] in TEXT_ENCODERS or "TextEncode" in n["class_type"] for n in graph.values())


def prepare(paths: list[Path], info: dict[str, Any]) -> Run:
    run = Run()
    for path in paths:
        name = path.name
        data = json.loads(path.read_text())
        if not is_ui_format(data):
            run.outcomes.append(Outcome(name, "not-ui"))
            continue
        missing = sorted(node_types(data) - set(info))
        try:
            graph = ui_to_api(data, info)
        except WorkflowError as exc:
            kind = "not-installed" if missing else "conversion-error"
            run.outcomes.append(Outcome(name, kind, ", ".join(missing[:4]) if missing else str(exc)))
            continue
        if missing:  # converted although a node type is absent: our check failed
            run.outcomes.append(Outcome(name, "conversion-error", f"converted despite missing {missing}"))
            continue
        try:
            template = WorkflowTemplate.from_graph(path.stem, graph, object_info=info)
        except WorkflowError as exc:
            if "no prompt slot" in str(exc) and not has_text_encoder(graph):
                run.outcomes.append(Outcome(name, "no-prompt"))
            else:
                run.outcomes.append(Outcome(name, "template-error", str(exc)))
            continue
        run.graphs[name] = template.patch(ATTEMPT)
    return run


def media_files(graphs: dict[str, dict[str, Any]], info: dict[str, Any]) -> set[str]:
    """The input files the graphs name on picker inputs (LoadImage, LoadVideo, LoadAudio...)."""
    names: set[str] = set()
    for graph in graphs.values():
        for node in graph.values():
            declared = (info.get(node["class_type"]) or {}).get("input") or {}
            for section in ("required", "optional"):
                for input_name, spec in (declared.get(section) or {}).items():
                    opts = spec[1] if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict) else {}
                    value = node["inputs"].get(input_name)
                    if any(opts.get(flag) for flag in MEDIA_FLAGS) and isinstance(value, str) and value:
                        names.add(value)
    return names


def only_missing_files(exc: ValidationFailed) -> bool:
    """Every problem is a model-name or picker input naming a file this server does not have."""
    problems = [item for detail in exc.node_errors.values() for item in (detail or {}).get("errors") or []]
    return bool(problems) and all(item.get("type") in MISSING_FILE_TYPES for item in problems)


def describe(exc: ValidationFailed) -> str:
    problems = [
        f"{detail.get('class_type')}.{(item.get('extra_info') or {}).get('input_name')}: {item.get('type')} "
        f"{str(item.get('details', ''))[:80]}"
        for detail in exc.node_errors.values()
        for item in (detail or {}).get("errors") or []
        if item.get("type") not in MISSING_FILE_TYPES
    ]
    return "; ".join(problems[:4]) or str(exc)[:300]


async def submit_all(client: ComfyClient, run: Run) -> None:
    # Hold the queue: nothing submitted after this slow prompt runs before it is dequeued.
    blocker = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "TowerSlowProgress", "inputs": {"images": ["1", 0], "steps": 3000, "step_s": 0.05}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "tower/templates-hold"}},
    }
    hold = (await client.submit(blocker, str(uuid.uuid4()))).prompt_id
    accepted: list[str] = []
    try:
        for name, graph in run.graphs.items():
            try:
                submitted = await client.submit(graph, str(uuid.uuid4()))
            except ModelMissing:
                run.outcomes.append(Outcome(name, "model-missing"))
            except ValidationFailed as exc:
                kind = "file-missing" if only_missing_files(exc) else "invalid"
                run.outcomes.append(Outcome(name, kind, "" if kind == "file-missing" else describe(exc)))
            else:
                accepted.append(submitted.prompt_id)
                # ComfyUI queues the outputs that validate (previews of the inputs) and reports the rest.
                partial = ValidationFailed("partial", node_errors=submitted.node_errors)
                if not submitted.node_errors:
                    run.outcomes.append(Outcome(name, "accepted"))
                elif only_missing_files(partial):
                    run.outcomes.append(Outcome(name, "partial"))
                else:
                    run.outcomes.append(Outcome(name, "invalid", describe(partial)))
    finally:
        await client.delete_queued(accepted)
        await client.interrupt(hold)
        end = time.monotonic() + 10
        while hold in await client.queue() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await client.delete_history([hold])


def report(title: str, run: Run) -> str:
    counts = collections.Counter(o.kind for o in run.outcomes)
    lines = [f"{title}: {len(run.outcomes)} templates", "| outcome | templates |", "|---|---|"]
    lines += [f"| {KINDS[kind]} | {counts[kind]} |" for kind in KINDS if counts[kind]]
    failed = [o for o in run.outcomes if o.kind in FAILURES]
    lines += [f"  {o.kind}: {o.name}: {o.detail}" for o in failed]
    return "\n".join(lines)


async def run_templates(client: ComfyClient, info: dict[str, Any], paths: list[Path]) -> Run:
    run = prepare(paths, info)
    for name in sorted(media_files(run.graphs, info)):
        # A placeholder is enough: validation only checks that the file exists.
        folder, _, base = name.rpartition("/")
        await client.upload_image(b"\x89PNG\r\n\x1a\n placeholder", base, subfolder=folder)
    await submit_all(client, run)
    return run


async def test_every_official_template_converts_and_validates(comfy_urls):
    paths = official_templates()
    assert len(paths) > 100, f"no ComfyUI templates found under {VENV}"
    started = time.monotonic()
    client = ComfyClient(comfy_urls[0])
    try:
        info = await client.object_info()
        run = await run_templates(client, info, paths)
        text = report(f"ComfyUI templates ({time.monotonic() - started:.1f} s)", run)
        extras = extra_templates()
        if extras:
            text += "\n\n" + report("extra templates (report only)", await run_templates(client, info, extras))
    finally:
        await client.aclose()
    sys.stdout.write("\n" + text + "\n")
    assert len(run.outcomes) == len(paths)
    failed = [o for o in run.outcomes if o.kind in FAILURES]
    assert not failed, text
    # The server saw every template that uses only installed nodes and takes a prompt.
    assert len(run.graphs) == sum(o.kind in ("accepted", "partial", "model-missing", "file-missing") for o in run.outcomes)


CHROMIUM = Path(os.environ.get("TOWER_CHROMIUM", "/usr/bin/chromium"))
LOAD_AND_CONVERT = """async (workflow) => {
    await window.app.loadGraphData(workflow, true, false, null,
                                   {showMissingNodesDialog: false, showMissingModelsDialog: false});
    return (await window.app.graphToPrompt()).output;
}"""


def differences(ours: dict[str, Any], theirs: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """What differs between two API graphs, on the inputs each node declares (the server reads
    only those; the frontend also sends display-only widgets, like SaveGLB's viewer)."""
    out = [f"node {nid}: only in {'ours' if nid in ours else 'the frontend'}" for nid in sorted(set(ours) ^ set(theirs))]
    for nid in sorted(set(ours) & set(theirs)):
        a, b = ours[nid], theirs[nid]
        if a["class_type"] != b["class_type"]:
            out.append(f"node {nid}: {a['class_type']} vs {b['class_type']}")
            continue
        declared = (info.get(a["class_type"]) or {}).get("input") or {}
        names = set(declared.get("required") or {}) | set(declared.get("optional") or {})
        for name in sorted(names):
            if a["inputs"].get(name, "<unset>") != b["inputs"].get(name, "<unset>"):
                out.append(f"{nid}.{name}: ours {a['inputs'].get(name, '<unset>')!r:.60} "
                           f"frontend {b['inputs'].get(name, '<unset>')!r:.60}")
    return out


async def test_conversion_matches_the_comfyui_frontend(comfy_urls):
    playwright = pytest.importorskip("playwright.async_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium; see tests/browser)")
    client = ComfyClient(comfy_urls[0])
    try:
        info = await client.object_info()
    finally:
        await client.aclose()
    workflows = {}
    for path in official_templates():
        data = json.loads(path.read_text())
        if is_ui_format(data) and not node_types(data) - set(info):
            workflows[path.name] = data
    assert len(workflows) > 50
    mismatched: dict[str, list[str]] = {}
    async with playwright.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu",
                                                                                     "--disable-dev-shm-usage"])
        try:
            page = await browser.new_page()
            await page.goto(comfy_urls[0])
            await page.wait_for_function("window.app && window.app.graph", timeout=60_000)
            for name, data in workflows.items():
                theirs = await page.evaluate(LOAD_AND_CONVERT, data)
                found = differences(ui_to_api(data, info), theirs, info)
                if found:
                    mismatched[name] = found
        finally:
            await browser.close()
    sys.stdout.write(f"\n{len(workflows) - len(mismatched)} of {len(workflows)} templates convert exactly as ComfyUI's frontend\n")
    assert not mismatched, "\n".join(f"{name}: {'; '.join(found[:5])}" for name, found in mismatched.items())
