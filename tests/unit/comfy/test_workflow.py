"""Slots found by following links, patching, template names, sampler names; UI-format conversion
(subgraphs, bypass, mute, primitives, reroutes, upload markers) on small hand-made graphs."""

from __future__ import annotations

import json

import pytest

from comfy.errors import WorkflowError
from comfy.ui_format import is_ui_format, ui_to_api
from comfy.workflow import (
    BUILTIN_TEMPLATE,
    Target,
    WorkflowTemplate,
    comfy_sampler_name,
    find_slots,
    read_template_file,
    workflow_name,
)

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
        template.patch({"scheduler": "karras"})


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


def test_ui_legacy_group_nodes_are_refused():
    with pytest.raises(WorkflowError, match="group nodes"):
        ui_to_api(ui_workflow(extra={"groupNodes": {"g": {}}}), OBJECT_INFO)


def test_ui_unknown_types_and_short_widgets_are_refused():
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


# -- sampler, prompt requirement ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tower", "comfy"),
    [
        ("euler_ancestral", "euler_ancestral"),
        ("Euler a", "euler_ancestral"),
        ("DPM++ 2M Karras", "dpmpp_2m"),
        ("dpm++_2m_sde", "dpmpp_2m_sde"),
        ("DPM2 a", "dpm_2_ancestral"),
        ("UniPC", "uni_pc"),
        ("k_lms", "lms"),
        ("DDIM", "ddim"),
    ],
)
def test_sampler_names_are_mapped_to_comfyui(tower, comfy):
    assert comfy_sampler_name(tower) == comfy


def test_the_sampler_goes_into_the_sampler_node_when_valid():
    template = WorkflowTemplate.from_graph("sd", SD_GRAPH)
    assert template.slots["sampler"] == (Target("11", "sampler_name"),)
    graph = template.patch({"sampler": "Euler a", "steps": 12, "cfg": 5.5})
    assert graph["11"]["inputs"].items() >= {"sampler_name": "euler_ancestral", "steps": 12, "cfg": 5.5}.items()
    assert template.patch({"sampler": "plms"})["11"]["inputs"]["sampler_name"] == "euler"  # not a choice: kept
    # The server's /object_info, when given, decides what is valid.
    info = {"KSampler": {"input": {"required": {"sampler_name": [["euler", "ddim"], {}]}}}}
    narrow = WorkflowTemplate.from_graph("sd", SD_GRAPH, object_info=info)
    assert narrow.patch({"sampler": "euler_ancestral"})["11"]["inputs"]["sampler_name"] == "euler"
    assert narrow.patch({"sampler": "DDIM"})["11"]["inputs"]["sampler_name"] == "ddim"
    # A number outside the node's declared range is not set: SDTurboScheduler takes at most 10 steps.
    info["KSampler"]["input"]["required"]["steps"] = ["INT", {"min": 1, "max": 10}]
    limited = WorkflowTemplate.from_graph("sd", SD_GRAPH, object_info=info)
    assert limited.patch({"steps": 12})["11"]["inputs"]["steps"] == 20
    assert limited.patch({"steps": 8})["11"]["inputs"]["steps"] == 8
    # SamplerCustomAdvanced: the KSamplerSelect feeding it.
    video = WorkflowTemplate.from_graph("v", VIDEO_GRAPH)
    assert video.slots["sampler"] == (Target("8", "sampler_name"),)
    assert video.patch({"sampler": "UniPC"})["8"]["inputs"]["sampler_name"] == "uni_pc"


def test_a_zero_out_negative_gives_a_prompt_slot_and_no_negative_slot():
    graph = json.loads(json.dumps(SD_GRAPH))
    graph["33"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["12", 0]}}
    graph["21"]["inputs"]["negative"] = ["33", 0]
    slots = WorkflowTemplate.from_graph("flux-like", graph).slots
    assert set(slots["prompt"]) == {Target("7", "text"), Target("8", "text")}
    assert "negative_prompt" not in slots


def test_a_template_without_prompt_slot_is_refused_unless_prompt_free():
    image_only = json.loads(json.dumps(SD_GRAPH))
    image_only["21"] = {"class_type": "SVD_img2vid_Conditioning", "inputs": {"init_image": ["23", 0], "vae": ["40", 2],
                        "clip_vision": ["40", 1], "width": 64, "height": 64, "video_frames": 4}}
    for encoder in ("7", "8", "3", "12"):
        del image_only[encoder]
    with pytest.raises(WorkflowError, match="no prompt slot.*never reach the render"):
        WorkflowTemplate.from_graph("svd", image_only)
    image_only["11"]["_meta"] = {"title": "sampler", "tower_prompt_free": True}
    assert "prompt" not in WorkflowTemplate.from_graph("svd", image_only).slots
    # Nothing that takes text (the built-in model-free template): prompt-free without saying so.
    name, data, sha = read_template_file(BUILTIN_TEMPLATE)
    assert "prompt" not in WorkflowTemplate.from_graph(name, data, sha).slots
    # A node with a literal prompt that no sampler uses would lose the prompt: refused.
    api_node = {"1": {"class_type": "OpenAIGPTImage1", "inputs": {"prompt": "a cat", "seed": 1}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    with pytest.raises(WorkflowError, match="no prompt slot"):
        WorkflowTemplate.from_graph("api", api_node)


def test_guider_inputs_and_typed_strings_are_prompt_slots():
    graph = {
        "1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "system prefix"}},
        "2": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a cat"}},
        "3": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": ["2", 0], "delimiter": ""}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": ["3", 0], "clip": ["9", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blur", "clip": ["9", 1]}},
        "6": {"class_type": "DualCFGGuider", "inputs": {"model": ["9", 0], "cond1": ["4", 0], "cond2": ["5", 0],
              "negative": ["4", 0], "cfg_conds": 5.0, "cfg_cond2_negative": 2.0, "style": "regular"}},
        "7": {"class_type": "SamplerCustomAdvanced", "inputs": {"guider": ["6", 0], "latent_image": ["8", 0]}},
        "8": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "9": {"class_type": "Loader", "inputs": {}},
        "10": {"class_type": "BasicGuider", "inputs": {"model": ["9", 0], "conditioning": ["11", 0]}},
        "11": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["5", 0], "guidance": 3.5}},
    }
    slots = find_slots(graph)
    # DualCFGGuider weighs cond1 against cond2; its "negative" (here the positive text) is not a negative.
    assert slots["prompt"] == (Target("2", "value"),) and slots["negative_prompt"] == (Target("5", "text"),)
    graph["7"]["inputs"]["guider"] = ["10", 0]
    assert find_slots(graph)["prompt"] == (Target("5", "text"),)  # BasicGuider's conditioning is the positive


# -- UI format: subgraphs, bypass, mute, markers ------------------------------------------------------

UI_INFO = {
    **OBJECT_INFO,
    "ImageInvert": {"input": {"required": {"image": ["IMAGE"]}}},
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["m.safetensors"]]}}},
    "LoraLoader": {"input": {"required": {"model": ["MODEL"], "clip": ["CLIP"], "lora_name": [["l.safetensors"]],
                                          "strength_model": ["FLOAT", {}], "strength_clip": ["FLOAT", {}]}},
                   "input_order": {"required": ["model", "clip", "lora_name", "strength_model", "strength_clip"]}},
    "CLIPTextEncode": {"input": {"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}}},
    "VAEDecode": {"input": {"required": {"samples": ["LATENT"], "vae": ["VAE"]}}},
    "LoadVideo": {"input": {"required": {"file": ["COMBO", {"options": ["clip.mp4"], "video_upload": True}]}}},
    "LoadAudio": {"input": {"required": {"audio": [["a.wav"], {"audio_upload": True}]}}},
    "GetImageSize": {"input": {"required": {"image": ["IMAGE"]}, "hidden": {"unique_id": "UNIQUE_ID"}}},
}


def ui_node(node_id, kind, inputs=(), outputs=(), widgets=None, mode=0, **extra):
    """A UI-format node: inputs as (name, type, link[, widget]), outputs as (name, type, links)."""
    node = {"id": node_id, "type": kind, "mode": mode,
            "inputs": [{"name": i[0], "type": i[1], "link": i[2], **({"widget": {"name": i[0]}} if len(i) > 3 else {})}
                       for i in inputs],
            "outputs": [{"name": o[0], "type": o[1], "links": list(o[2])} for o in outputs]}
    if widgets is not None:
        node["widgets_values"] = widgets
    node.update(extra)
    return node


def blend_subgraph(sub_id="sg-blend", extra_nodes=(), extra_links=()):
    """A subgraph: image -> ImageBlend(image, ImageInvert(image), factor, mode) -> IMAGE."""
    return {
        "id": sub_id, "name": "Blend with inverse",
        "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [10, 15]},
                   {"name": "factor", "type": "FLOAT", "linkIds": [11]},
                   {"name": "mode", "type": "COMBO", "linkIds": [12]}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [13]}],
        "nodes": [
            ui_node(5, "ImageBlend", [("image1", "IMAGE", 10), ("image2", "IMAGE", 14),
                                      ("blend_factor", "FLOAT", 11, "w"), ("blend_mode", "COMBO", 12, "w")],
                    [("IMAGE", "IMAGE", [13])], [0.5, "normal"]),
            ui_node(6, "ImageInvert", [("image", "IMAGE", 15)], [("IMAGE", "IMAGE", [14])]),
            *extra_nodes,
        ],
        "links": [
            {"id": 10, "origin_id": -10, "origin_slot": 0, "target_id": 5, "target_slot": 0, "type": "IMAGE"},
            {"id": 11, "origin_id": -10, "origin_slot": 1, "target_id": 5, "target_slot": 2, "type": "FLOAT"},
            {"id": 12, "origin_id": -10, "origin_slot": 2, "target_id": 5, "target_slot": 3, "type": "COMBO"},
            {"id": 14, "origin_id": 6, "origin_slot": 0, "target_id": 5, "target_slot": 1, "type": "IMAGE"},
            {"id": 15, "origin_id": -10, "origin_slot": 0, "target_id": 6, "target_slot": 0, "type": "IMAGE"},
            {"id": 13, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"},
            *extra_links,
        ],
    }


def test_ui_subgraph_instances_are_flattened_with_prefixed_ids():
    ui = {
        "nodes": [
            ui_node(1, "LoadImage", outputs=[("IMAGE", "IMAGE", [1, 3])], widgets=["a.png", "image"]),
            # Saved files leave out unlinked widget inputs; the instance's widgets are its promoted inputs.
            ui_node(2, "sg-blend", [("image", "IMAGE", 1)], [("IMAGE", "IMAGE", [2])], [0.7, "multiply"]),
            ui_node(3, "SaveImage", [("images", "IMAGE", 2)], widgets=["out"]),
            # Same subgraph, values placed by name through proxyWidgets (by index they would swap).
            ui_node(4, "sg-blend", [("image", "IMAGE", 3)], [("IMAGE", "IMAGE", [4])], ["multiply", 0.25],
                    properties={"proxyWidgets": [["-1", "mode"], ["-1", "factor"]]}),
            ui_node(7, "SaveImage", [("images", "IMAGE", 4)], widgets=["out2"]),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 1, 0, 4, 0, "IMAGE"], [4, 4, 0, 7, 0, "IMAGE"]],
        "definitions": {"subgraphs": [blend_subgraph()]},
    }
    graph = ui_to_api(ui, UI_INFO)
    assert set(graph) == {"1", "2:5", "2:6", "3", "4:5", "4:6", "7"}
    assert graph["2:5"]["inputs"] == {"blend_factor": 0.7, "blend_mode": "multiply", "image1": ["1", 0], "image2": ["2:6", 0]}
    assert graph["2:6"]["inputs"] == {"image": ["1", 0]}
    assert graph["3"]["inputs"]["images"] == ["2:5", 0]
    assert graph["4:5"]["inputs"]["blend_factor"] == 0.25 and graph["4:5"]["inputs"]["blend_mode"] == "multiply"
    assert graph["7"]["inputs"]["images"] == ["4:5", 0]


def test_ui_nested_subgraphs_and_unpromoted_inner_widgets():
    inner = blend_subgraph()
    inner["inputs"] = inner["inputs"][:1]  # factor and mode not exposed: the inner widgets keep their values
    inner["links"] = [link for link in inner["links"] if link["id"] not in (11, 12)]
    inner["nodes"][0]["inputs"] = inner["nodes"][0]["inputs"][:2]
    outer = {
        "id": "sg-outer", "name": "outer",
        "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [20]}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [21]}],
        "nodes": [ui_node(8, "sg-blend", [("image", "IMAGE", 20)], [("IMAGE", "IMAGE", [21])], [])],
        "links": [{"id": 20, "origin_id": -10, "origin_slot": 0, "target_id": 8, "target_slot": 0, "type": "IMAGE"},
                  {"id": 21, "origin_id": 8, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}],
    }
    ui = {
        "nodes": [ui_node(1, "LoadImage", outputs=[("IMAGE", "IMAGE", [1])], widgets=["a.png", "image"]),
                  ui_node(7, "sg-outer", [("image", "IMAGE", 1)], [("IMAGE", "IMAGE", [2])], []),
                  ui_node(3, "SaveImage", [("images", "IMAGE", 2)], widgets=["out"])],
        "links": [[1, 1, 0, 7, 0, "IMAGE"], [2, 7, 0, 3, 0, "IMAGE"]],
        "definitions": {"subgraphs": [inner, outer]},
    }
    graph = ui_to_api(ui, UI_INFO)
    assert set(graph) == {"1", "7:8:5", "7:8:6", "3"}
    assert graph["7:8:5"]["inputs"] == {"blend_factor": 0.5, "blend_mode": "normal", "image1": ["1", 0], "image2": ["7:8:6", 0]}
    assert graph["3"]["inputs"]["images"] == ["7:8:5", 0]
    # A subgraph that contains itself is refused, not followed forever.
    inner["nodes"].append(ui_node(9, "sg-outer", [("image", "IMAGE", None)], [("IMAGE", "IMAGE", [])], []))
    with pytest.raises(WorkflowError, match="contains itself"):
        ui_to_api(ui, UI_INFO)


def lora_graph(lora_mode=0, decode_mode=0):
    return {
        "nodes": [
            ui_node(1, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [2]), ("VAE", "VAE", [9])],
                    widgets=["m.safetensors"]),
            ui_node(2, "LoraLoader", [("model", "MODEL", 1), ("clip", "CLIP", 2)],
                    [("MODEL", "MODEL", [3]), ("CLIP", "CLIP", [4])], ["l.safetensors", 1.0, 1.0], mode=lora_mode),
            ui_node(3, "CLIPTextEncode", [("clip", "CLIP", 4)], [("CONDITIONING", "CONDITIONING", [5, 6])], ["a cat"]),
            ui_node(4, "KSampler", [("model", "MODEL", 3), ("positive", "CONDITIONING", 5), ("negative", "CONDITIONING", 6),
                                    ("latent_image", "LATENT", 7)], [("LATENT", "LATENT", [8])],
                    [1, "randomize", 20, 7.0, "euler", "normal", 1.0]),
            ui_node(5, "EmptyLatentImage", outputs=[("LATENT", "LATENT", [7])], widgets=[64, 64, 1]),
            ui_node(6, "VAEDecode", [("samples", "LATENT", 8), ("vae", "VAE", 9)], [("IMAGE", "IMAGE", [10])], mode=decode_mode),
            ui_node(7, "SaveImage", [("images", "IMAGE", 10)], widgets=["out"]),
        ],
        "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 1, 1, 2, 1, "CLIP"], [3, 2, 0, 4, 0, "MODEL"], [4, 2, 1, 3, 0, "CLIP"],
                  [5, 3, 0, 4, 1, "CONDITIONING"], [6, 3, 0, 4, 2, "CONDITIONING"], [7, 5, 0, 4, 3, "LATENT"],
                  [8, 4, 0, 6, 0, "LATENT"], [9, 1, 2, 6, 1, "VAE"], [10, 6, 0, 7, 0, "IMAGE"]],
    }


SAMPLER_INFO = {
    **UI_INFO,
    "KSampler": {"input": {"required": {"model": ["MODEL"], "seed": ["INT", {"control_after_generate": True}],
                                        "steps": ["INT", {}], "cfg": ["FLOAT", {}], "sampler_name": [["euler"]],
                                        "scheduler": [["normal"]], "positive": ["CONDITIONING"],
                                        "negative": ["CONDITIONING"], "latent_image": ["LATENT"], "denoise": ["FLOAT", {}]}},
                 "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                              "negative", "latent_image", "denoise"]}},
    "EmptyLatentImage": {"input": {"required": {"width": ["INT", {}], "height": ["INT", {}], "batch_size": ["INT", {}]}},
                         "input_order": {"required": ["width", "height", "batch_size"]}},
}


def test_ui_bypassed_nodes_pass_their_inputs_through_by_type():
    graph = ui_to_api(lora_graph(lora_mode=4), SAMPLER_INFO)
    assert "2" not in graph
    assert graph["4"]["inputs"]["model"] == ["1", 0]  # MODEL output 0 -> its MODEL input's upstream
    assert graph["3"]["inputs"]["clip"] == ["1", 1]  # CLIP output 1 -> its CLIP input's upstream
    assert graph["4"]["inputs"]["seed"] == 1 and graph["4"]["inputs"]["sampler_name"] == "euler"
    # A bypassed node with no input of the wanted type passes nothing: the input stays unset.
    graph = ui_to_api(lora_graph(decode_mode=4), SAMPLER_INFO)
    assert "6" not in graph and "images" not in graph["7"]["inputs"]
    # Bypassing a subgraph instance works the same way (IMAGE in -> IMAGE out).
    ui = {"nodes": [ui_node(1, "LoadImage", outputs=[("IMAGE", "IMAGE", [1])], widgets=["a.png", "image"]),
                    ui_node(2, "sg-blend", [("image", "IMAGE", 1)], [("IMAGE", "IMAGE", [2])], [0.7, "multiply"], mode=4),
                    ui_node(3, "SaveImage", [("images", "IMAGE", 2)], widgets=["out"])],
          "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
          "definitions": {"subgraphs": [blend_subgraph()]}}
    assert ui_to_api(ui, UI_INFO)["3"]["inputs"]["images"] == ["1", 0]


def test_ui_muted_nodes_are_dropped_with_the_inputs_they_feed():
    graph = ui_to_api(lora_graph(lora_mode=2), SAMPLER_INFO)
    assert "2" not in graph
    assert "model" not in graph["4"]["inputs"] and "clip" not in graph["3"]["inputs"]
    assert graph["4"]["inputs"]["positive"] == ["3", 0]


def test_ui_loadvideo_loadaudio_markers_and_progress_text():
    ui = {"nodes": [ui_node(1, "LoadVideo", widgets=["clip.mp4", "image"]),  # real exports store "image"
                    ui_node(2, "LoadAudio", widgets=["a.wav", None, None]),
                    ui_node(3, "LoadImage", outputs=[("IMAGE", "IMAGE", [1])], widgets=["a.png", "image"]),
                    ui_node(4, "GetImageSize", [("image", "IMAGE", 1)], widgets=["width: 64, height: 64\n batch size: 1"])],
          "links": [[1, 3, 0, 4, 0, "IMAGE"]]}
    graph = ui_to_api(ui, UI_INFO)
    assert graph["1"]["inputs"] == {"file": "clip.mp4"} and graph["2"]["inputs"] == {"audio": "a.wav"}
    assert graph["4"]["inputs"] == {"image": ["3", 0]}  # the size text the editor showed is not an input
    ui["nodes"][3]["widgets_values"] = ["text", 5]
    with pytest.raises(WorkflowError, match="only 0 used"):
        ui_to_api(ui, UI_INFO)


def test_ui_prompt_free_property_reaches_the_template():
    ui = ui_workflow()
    ui["nodes"][3]["properties"] = {"tower_prompt_free": True}
    assert ui_to_api(ui, OBJECT_INFO)["4"]["_meta"]["tower_prompt_free"] is True


def test_motion_strength_fills_the_video_models_motion_bucket():
    from render.comfyui import motion_bucket

    graph = {**SD_GRAPH, "50": {"class_type": "SVD_img2vid_Conditioning", "inputs": {
        "motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0, "width": 1024, "height": 576,
        "video_frames": 14, "clip_vision": ["40", 1], "init_image": ["23", 0], "vae": ["40", 2]}}}
    template = WorkflowTemplate.from_graph("svd", graph)
    assert template.slots["motion_bucket"] == (Target("50", "motion_bucket_id"),)
    assert [motion_bucket(s) for s in (0.0, 0.5, 1.0, 7.0)] == [1, 128, 255, 255]
    assert template.patch({"motion_bucket": motion_bucket(0.2)})["50"]["inputs"]["motion_bucket_id"] == 52
    assert "motion_bucket" not in WorkflowTemplate.from_graph("sd", SD_GRAPH).slots
