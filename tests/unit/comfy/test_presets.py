"""The shipped presets without a server: their slots are wired, their loaders name the files the
manifest lists, a user's file name replaces the published one, and missing files are found from
a server's folder listings. The real server's side is tests/models."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from comfy.errors import WorkflowError
from comfy.presets import LOADER_INPUTS, MODEL_MARK, PRESETS, catalog, missing_files, model_file, preset, unknown_roles
from comfy.workflow import WorkflowTemplate

SLOTS_OF_EVERY_PRESET = {"prompt", "negative_prompt", "seed", "steps", "cfg", "sampler", "width", "height"}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_has_its_slots_wired(name: str) -> None:
    p = preset(name)
    template = WorkflowTemplate.from_graph(name, p.graph())
    assert SLOTS_OF_EVERY_PRESET <= set(template.slots), set(template.slots)
    if p.kind == "video":
        assert "frame_count" in template.slots
    assert ("reference_image" in template.slots) == p.needs_reference
    graph = template.patch({"prompt": "Kai in the rain", "negative_prompt": "blurry", "seed": 11, "steps": 3,
                            "cfg": 6.5, "width": 320, "height": 192, "frame_count": 1})
    text = json.dumps(graph)
    assert "Kai in the rain" in text and "blurry" in text
    sizes = [(node["inputs"]["width"], node["inputs"]["height"]) for node in graph.values()
             if isinstance(node["inputs"].get("width"), int)]
    assert sizes and set(sizes) == {(320, 192)}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_loader_is_marked_and_named_by_the_manifest(name: str) -> None:
    graph = preset(name).graph()
    loaders = [node for node in graph.values() if node["class_type"] in LOADER_INPUTS]
    assert loaders
    for node in loaders:
        role = node["_meta"][MODEL_MARK]
        input_name, folder = LOADER_INPUTS[node["class_type"]]
        assert node["inputs"][input_name] == catalog()[role].name
        assert catalog()[role].folder == folder
    for f in preset(name).files():
        assert f.url and f.url.startswith("https://"), f"{f.role} has no download URL"


def test_a_users_file_name_replaces_the_published_one_and_changes_the_workflow() -> None:
    mine = {"sd15-checkpoint": "myAnime_v3.safetensors"}
    graph = preset("anime-sd15").graph(mine)
    assert [n["inputs"]["ckpt_name"] for n in graph.values() if n["class_type"] == "CheckpointLoaderSimple"] == [
        "myAnime_v3.safetensors"]
    assert model_file("sd15-checkpoint", mine).url is None  # Tower does not know where the user's file comes from
    assert preset("anime-sd15").workflow(mine) != preset("anime-sd15").workflow()
    assert preset("anime-sd15").workflow(mine) == preset("anime-sd15").workflow(dict(mine))
    assert unknown_roles({"sd15-checkpont": "x"}) == ["sd15-checkpont"]


def test_missing_files_compares_the_servers_listings() -> None:
    files = preset("video-wan22-5b").files()
    have_all = {f.folder: [f.name] for f in files}
    assert missing_files(files, have_all) == []
    diffusion = next(f for f in files if f.folder == "diffusion_models")
    lacking = {**have_all, "diffusion_models": ["wan2.1_t2v_1.3B_fp16.safetensors"]}
    assert missing_files(files, lacking) == [diffusion]
    # ComfyUI lists files in sub-folders with the platform's separator.
    in_subfolder = replace(diffusion, name=f"wan/{diffusion.name}")
    assert missing_files([in_subfolder], {"diffusion_models": [f"wan\\{diffusion.name}"]}) == []
    assert missing_files([in_subfolder], {"diffusion_models": [diffusion.name]}) == [in_subfolder]


def test_an_unknown_preset_names_the_choices() -> None:
    with pytest.raises(WorkflowError, match="anime-sd15, anime-sdxl"):
        preset("anime-sd3")
