"""Slots found by following links, patching, template names; UI-format conversion."""

from __future__ import annotations

import json

import pytest

from comfy.errors import WorkflowError
from comfy.ui_format import is_ui_format, ui_to_api
from comfy.workflow import BUILTIN_TEMPLATE, Target, WorkflowTemplate, find_slots, read_template_file, workflow_name

# An SD graph whose node ids say nothing: the text encoders sit behind a ControlNet (which passes
# positive on output 0, negative on output 1) and a ConditioningCombine.
SD_GRAPH = {
    "40": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "old positive", "clip": ["40", 1]}},
    "8": {"class_type": "CLIPTextEncode", "inputs": {"text": "old style", "clip": ["40", 1]}},
    "12": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["7", 0], "conditioning_2": ["8", 0]}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "old negative", "clip": ["40", 1]}},
    "21": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["12", 0], "negative": ["3", 0],
           "control_net": ["22", 0], "image": ["23", 0], "strength": 1.0}},
    "22": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "cn.safetensors"}},
    "23": {"class_type": "LoadImage", "inputs": {"image": "pose.png"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "11": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
           "scheduler": "normal", "denoise": 1.0, "model": ["40", 0], "positive": ["21", 0],
           "negative": ["21", 1], "latent_image": ["5", 0]}},
    "9": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["40", 2]}},
    "30": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "x"}},
}

VIDEO_GRAPH = {
    "1": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
    "2": {"class_type": "CFGGuider", "inputs": {"cfg": 6.0, "model": ["9", 0], "positive": ["3", 0], "negative": ["4", 0]}},
    "3": {"class_type": "TextEncodeHunyuanVideo_ImageToVideo", "inputs": {"prompt": "p", "clip": ["9", 1], "clip_vision_output": ["9", 2]}},
    "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "n", "clip": ["9", 1]}},
    "5": {"class_type": "BasicScheduler", "inputs": {"steps": 30, "scheduler": "simple", "denoise": 1.0, "model": ["9", 0]}},
    "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 848, "height": 480, "length": 73, "batch_size": 1}},
    "7": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["1", 0], "guider": ["2", 0], "sampler": ["8", 0],
          "sigmas": ["5", 0], "latent_image": ["6", 0]}},
    "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    "9": {"class_type": "Loader", "inputs": {}},
}


def test_slots_follow_links_not_ids():
    slots = find_slots(SD_GRAPH)
    assert set(slots["prompt"]) == {Target("7", "text"), Target("8", "text")}
    assert slots["negative_prompt"] == (Target("3", "text"),)
    assert slots["seed"] == (Target("11", "seed"),)
    assert slots["steps"] == (Target("11", "steps"),) and slots["cfg"] == (Target("11", "cfg"),)
    assert slots["width"] == (Target("5", "width"),) and slots["frame_count"] == (Target("5", "batch_size"),)
    assert slots["reference_image"] == (Target("23", "image"),)


def test_custom_sampler_parts_and_video_latents():
    slots = find_slots(VIDEO_GRAPH)
    assert slots["seed"] == (Target("1", "noise_seed"),)
    assert slots["cfg"] == (Target("2", "cfg"),) and slots["steps"] == (Target("5", "steps"),)
    assert slots["prompt"] == (Target("3", "prompt"),) and slots["negative_prompt"] == (Target("4", "text"),)
    assert slots["frame_count"] == (Target("6", "length"),)


def test_patch_returns_a_patched_copy():
    template = WorkflowTemplate.from_graph("sd", SD_GRAPH)
    graph = template.patch({"prompt": "Kai", "negative_prompt": "blur", "seed": 9, "width": 640, "frame_count": 4})
    assert graph["7"]["inputs"]["text"] == graph["8"]["inputs"]["text"] == "Kai"
    assert graph["3"]["inputs"]["text"] == "blur" and graph["11"]["inputs"]["seed"] == 9
    assert graph["5"]["inputs"] == {"width": 640, "height": 512, "batch_size": 4}
    assert SD_GRAPH["7"]["inputs"]["text"] == "old positive"  # the template is untouched
    with pytest.raises(WorkflowError, match="unknown slot"):
        template.patch({"sampler": "euler"})


def test_an_encoder_feeding_both_polarities_is_refused():
    graph = json.loads(json.dumps(SD_GRAPH))
    graph["21"]["inputs"]["negative"] = ["12", 0]
    graph["11"]["inputs"]["negative"] = ["12", 0]
    with pytest.raises(WorkflowError, match="both positive and negative"):
        find_slots(graph)


def test_builtin_template_is_model_free_and_named_by_content(tmp_path):
    name, data, sha = read_template_file(BUILTIN_TEMPLATE)
    template = WorkflowTemplate.from_graph(name, data, sha)
    template.require("width", "height", "frame_count", "seed")
    assert template.workflow == workflow_name(None) == f"comfyui-modelfree-{sha[:12]}"
    with pytest.raises(WorkflowError, match="no prompt slot"):
        template.require("prompt")
    edited = tmp_path / "modelfree.json"
    data["2"]["inputs"]["strength"] = 0.5
    edited.write_text(json.dumps(data))
    assert workflow_name(edited) != template.workflow  # editing a template changes the context


def test_bad_graphs_are_clear_errors(tmp_path):
    with pytest.raises(WorkflowError, match="class_type"):
        WorkflowTemplate.from_graph("x", {"1": {"inputs": {}}})
    with pytest.raises(WorkflowError, match="missing node"):
        WorkflowTemplate.from_graph("x", {"1": {"class_type": "A", "inputs": {"a": ["2", 0]}}})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(WorkflowError, match="not JSON"):
        read_template_file(bad)


OBJECT_INFO = {
    "EmptyImage": {"input": {"required": {"width": ["INT", {}], "height": ["INT", {}], "batch_size": ["INT", {}], "color": ["INT", {}]}},
                   "input_order": {"required": ["width", "height", "batch_size", "color"]}},
    "ImageAddNoise": {"input": {"required": {"image": ["IMAGE"], "seed": ["INT", {"control_after_generate": True}], "strength": ["FLOAT", {}]}},
                      "input_order": {"required": ["image", "seed", "strength"]}},
    "LoadImage": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}}},
    "ImageBlend": {"input": {"required": {"image1": ["IMAGE"], "image2": ["IMAGE"], "blend_factor": ["FLOAT", {}], "blend_mode": [["normal", "multiply"]]}}},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]}}},
}


def ui_workflow(**overrides):
    nodes = [
        {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 7}],
         "widgets_values": [64, 48, 2, 0]},
        {"id": 2, "type": "ImageAddNoise", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
         "widgets_values": [5, "randomize", 0.3]},
        {"id": 3, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 2}]},
        {"id": 4, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 3}], "widgets_values": ["tower/ui"]},
        {"id": 5, "type": "PrimitiveNode", "mode": 0, "outputs": [{"links": [7]}], "widgets_values": [96, "fixed"]},
        {"id": 6, "type": "Note", "mode": 0, "widgets_values": ["a note"]},
        {"id": 8, "type": "LoadImage", "mode": 2, "widgets_values": ["a.png", "image"]},
    ]
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"], [7, 5, 0, 1, 0, "INT"]]
    data = {"nodes": nodes, "links": links, "groups": [{"title": "visual only"}], "version": 0.4}
    data.update(overrides)
    return data


def test_ui_export_converts_with_object_info():
    ui = ui_workflow()
    assert is_ui_format(ui) and not is_ui_format(SD_GRAPH)
    graph = ui_to_api(ui, OBJECT_INFO)
    assert set(graph) == {"1", "2", "4"}  # reroute, primitive, note and the muted loader are gone
    assert graph["1"]["inputs"] == {"width": 96, "height": 48, "batch_size": 2, "color": 0}  # primitive inlined
    assert graph["2"]["inputs"] == {"seed": 5, "strength": 0.3, "image": ["1", 0]}  # control value skipped
    assert graph["4"]["inputs"] == {"filename_prefix": "tower/ui", "images": ["2", 0]}  # through the reroute
    template = WorkflowTemplate.from_graph("ui", graph)
    assert template.slots["seed"] == (Target("2", "seed"),) and template.slots["frame_count"] == (Target("1", "batch_size"),)


def test_ui_upload_widget_and_dict_widgets():
    ui = {"nodes": [{"id": 1, "type": "LoadImage", "mode": 0, "widgets_values": ["b.png", "image"]},
                    {"id": 2, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "link": 1}],
                     "widgets_values": {"filename_prefix": "p"}}],
          "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0}]}
    graph = ui_to_api(ui, OBJECT_INFO)
    assert graph["1"]["inputs"] == {"image": "b.png"} and graph["2"]["inputs"] == {"filename_prefix": "p", "images": ["1", 0]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"definitions": {"subgraphs": [{"id": "abc"}]}}, "subgraphs"),
        ({"extra": {"groupNodes": {"g": {}}}}, "group nodes"),
    ],
)
def test_ui_unsupported_features_are_refused(change, message):
    with pytest.raises(WorkflowError, match=message):
        ui_to_api(ui_workflow(**change), OBJECT_INFO)


def test_ui_bypass_unknown_types_and_short_widgets_are_refused():
    ui = ui_workflow()
    ui["nodes"][1]["mode"] = 4
    with pytest.raises(WorkflowError, match="bypass"):
        ui_to_api(ui, OBJECT_INFO)
    ui = ui_workflow()
    ui["nodes"][3]["type"] = "VHS_VideoCombine"
    with pytest.raises(WorkflowError, match="not installed"):
        ui_to_api(ui, OBJECT_INFO)
    ui = ui_workflow()
    ui["nodes"][0]["widgets_values"] = [64]
    with pytest.raises(WorkflowError, match="no value for widget"):
        ui_to_api(ui, OBJECT_INFO)


def test_ui_export_with_left_over_widget_values_is_refused():
    ui = ui_workflow()
    ui["nodes"][0]["widgets_values"] = [64, 48, 2, 0, 99]  # a widget this server's EmptyImage lacks
    with pytest.raises(WorkflowError, match="widget value\\(s\\) but only 4 used"):
        ui_to_api(ui, OBJECT_INFO)
