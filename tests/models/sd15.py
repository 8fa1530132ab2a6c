"""A checkpoint with the Stable Diffusion 1.5 architecture and weights made up here, for the
``models`` tests: the real tensor names and shapes of an original-format SD1.5 file
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``), so
ComfyUI detects it as SD1.5 and builds the real UNet, VAE and CLIP text encoder from it, with no
download. The layout follows the latent-diffusion configuration SD1.5 was published with
(``v1-inference.yaml``); :data:`PUBLISHED_PARAMETERS` are the parameter counts its publishers give,
which :func:`tensors` is checked against.

The weights are seeded Gaussian noise scaled by 1/sqrt(fan-in), norms one and biases zero: enough
for every layer to run and give finite numbers, nothing like a picture.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

Shape = tuple[int, ...]
#: UNet 859.52M, VAE 83.65M, CLIP ViT-L/14 text encoder 123.06M.
PUBLISHED_PARAMETERS = {"model.diffusion_model.": 859_520_964, "first_stage_model.": 83_653_863,
                        "cond_stage_model.": 123_060_480}
GENERATOR_VERSION = "sd15-noise-v1"

UNET_CHANNELS = 320
UNET_MULT = (1, 2, 4, 4)
UNET_ATTENTION_LEVELS = (0, 1, 2)
TIME_CHANNELS = 4 * UNET_CHANNELS
CONTEXT = 768
VAE_CHANNELS = 128
VAE_MULT = (1, 2, 4, 4)
LATENT = 4
CLIP_WIDTH, CLIP_LAYERS, CLIP_VOCAB, CLIP_POSITIONS = 768, 12, 49408, 77


def _conv(name: str, out: int, inp: int, k: int) -> Iterator[tuple[str, Shape]]:
    yield f"{name}.weight", (out, inp, k, k)
    yield f"{name}.bias", (out,)


def _linear(name: str, out: int, inp: int, bias: bool = True) -> Iterator[tuple[str, Shape]]:
    yield f"{name}.weight", (out, inp)
    if bias:
        yield f"{name}.bias", (out,)


def _norm(name: str, channels: int) -> Iterator[tuple[str, Shape]]:
    yield f"{name}.weight", (channels,)
    yield f"{name}.bias", (channels,)


def _unet_res(p: str, inp: int, out: int) -> Iterator[tuple[str, Shape]]:
    yield from _norm(f"{p}.in_layers.0", inp)
    yield from _conv(f"{p}.in_layers.2", out, inp, 3)
    yield from _linear(f"{p}.emb_layers.1", out, TIME_CHANNELS)
    yield from _norm(f"{p}.out_layers.0", out)
    yield from _conv(f"{p}.out_layers.3", out, out, 3)
    if inp != out:
        yield from _conv(f"{p}.skip_connection", out, inp, 1)


def _unet_attention(p: str, c: int) -> Iterator[tuple[str, Shape]]:
    yield from _norm(f"{p}.norm", c)
    yield from _conv(f"{p}.proj_in", c, c, 1)
    b = f"{p}.transformer_blocks.0"
    for attn, context in (("attn1", c), ("attn2", CONTEXT)):
        yield from _linear(f"{b}.{attn}.to_q", c, c, bias=False)
        yield from _linear(f"{b}.{attn}.to_k", c, context, bias=False)
        yield from _linear(f"{b}.{attn}.to_v", c, context, bias=False)
        yield from _linear(f"{b}.{attn}.to_out.0", c, c)
        if attn == "attn1":
            yield from _linear(f"{b}.ff.net.0.proj", 8 * c, c)  # GEGLU: two halves of 4c
            yield from _linear(f"{b}.ff.net.2", c, 4 * c)
    for n in (1, 2, 3):
        yield from _norm(f"{b}.norm{n}", c)
    yield from _conv(f"{p}.proj_out", c, c, 1)


def _unet() -> Iterator[tuple[str, Shape]]:
    yield from _linear("time_embed.0", TIME_CHANNELS, UNET_CHANNELS)
    yield from _linear("time_embed.2", TIME_CHANNELS, TIME_CHANNELS)
    yield from _conv("input_blocks.0.0", UNET_CHANNELS, LATENT, 3)
    skips, ch, block = [UNET_CHANNELS], UNET_CHANNELS, 1
    for level, mult in enumerate(UNET_MULT):
        for _ in range(2):
            yield from _unet_res(f"input_blocks.{block}.0", ch, mult * UNET_CHANNELS)
            ch = mult * UNET_CHANNELS
            if level in UNET_ATTENTION_LEVELS:
                yield from _unet_attention(f"input_blocks.{block}.1", ch)
            skips.append(ch)
            block += 1
        if level != len(UNET_MULT) - 1:
            yield from _conv(f"input_blocks.{block}.0.op", ch, ch, 3)
            skips.append(ch)
            block += 1
    yield from _unet_res("middle_block.0", ch, ch)
    yield from _unet_attention("middle_block.1", ch)
    yield from _unet_res("middle_block.2", ch, ch)
    block = 0
    for level, mult in reversed(list(enumerate(UNET_MULT))):
        for i in range(3):
            out = mult * UNET_CHANNELS
            yield from _unet_res(f"output_blocks.{block}.0", ch + skips.pop(), out)
            ch, layer = out, 1
            if level in UNET_ATTENTION_LEVELS:
                yield from _unet_attention(f"output_blocks.{block}.1", ch)
                layer = 2
            if level and i == 2:
                yield from _conv(f"output_blocks.{block}.{layer}.conv", ch, ch, 3)
            block += 1
    yield from _norm("out.0", ch)
    yield from _conv("out.2", LATENT, ch, 3)


def _vae_res(p: str, inp: int, out: int) -> Iterator[tuple[str, Shape]]:
    yield from _norm(f"{p}.norm1", inp)
    yield from _conv(f"{p}.conv1", out, inp, 3)
    yield from _norm(f"{p}.norm2", out)
    yield from _conv(f"{p}.conv2", out, out, 3)
    if inp != out:
        yield from _conv(f"{p}.nin_shortcut", out, inp, 1)


def _vae_middle(p: str, c: int) -> Iterator[tuple[str, Shape]]:
    yield from _vae_res(f"{p}.block_1", c, c)
    yield from _norm(f"{p}.attn_1.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        yield from _conv(f"{p}.attn_1.{name}", c, c, 1)
    yield from _vae_res(f"{p}.block_2", c, c)


def _vae() -> Iterator[tuple[str, Shape]]:
    yield from _conv("encoder.conv_in", VAE_CHANNELS, 3, 3)
    ch = VAE_CHANNELS
    for level, mult in enumerate(VAE_MULT):
        for i in range(2):
            yield from _vae_res(f"encoder.down.{level}.block.{i}", ch, mult * VAE_CHANNELS)
            ch = mult * VAE_CHANNELS
        if level != len(VAE_MULT) - 1:
            yield from _conv(f"encoder.down.{level}.downsample.conv", ch, ch, 3)
    yield from _vae_middle("encoder.mid", ch)
    yield from _norm("encoder.norm_out", ch)
    yield from _conv("encoder.conv_out", 2 * LATENT, ch, 3)
    yield from _conv("quant_conv", 2 * LATENT, 2 * LATENT, 1)
    yield from _conv("post_quant_conv", LATENT, LATENT, 1)
    ch = VAE_MULT[-1] * VAE_CHANNELS
    yield from _conv("decoder.conv_in", ch, LATENT, 3)
    yield from _vae_middle("decoder.mid", ch)
    for level, mult in reversed(list(enumerate(VAE_MULT))):
        for i in range(3):
            yield from _vae_res(f"decoder.up.{level}.block.{i}", ch, mult * VAE_CHANNELS)
            ch = mult * VAE_CHANNELS
        if level:
            yield from _conv(f"decoder.up.{level}.upsample.conv", ch, ch, 3)
    yield from _norm("decoder.norm_out", ch)
    yield from _conv("decoder.conv_out", 3, ch, 3)


def _clip() -> Iterator[tuple[str, Shape]]:
    t = "transformer.text_model"
    yield f"{t}.embeddings.token_embedding.weight", (CLIP_VOCAB, CLIP_WIDTH)
    yield f"{t}.embeddings.position_embedding.weight", (CLIP_POSITIONS, CLIP_WIDTH)
    for n in range(CLIP_LAYERS):
        layer = f"{t}.encoder.layers.{n}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            yield from _linear(f"{layer}.self_attn.{proj}", CLIP_WIDTH, CLIP_WIDTH)
        yield from _norm(f"{layer}.layer_norm1", CLIP_WIDTH)
        yield from _linear(f"{layer}.mlp.fc1", 4 * CLIP_WIDTH, CLIP_WIDTH)
        yield from _linear(f"{layer}.mlp.fc2", CLIP_WIDTH, 4 * CLIP_WIDTH)
        yield from _norm(f"{layer}.layer_norm2", CLIP_WIDTH)
    yield from _norm(f"{t}.final_layer_norm", CLIP_WIDTH)


def tensors() -> dict[str, Shape]:
    """Every weight tensor of an SD1.5 checkpoint, by its name in the original format."""
    out: dict[str, Shape] = {}
    for prefix, part in (("model.diffusion_model.", _unet), ("first_stage_model.", _vae), ("cond_stage_model.", _clip)):
        out.update((prefix + name, shape) for name, shape in part())
    return out


def parameters(shapes: dict[str, Shape], prefix: str) -> int:
    return sum(math.prod(shape) for name, shape in shapes.items() if name.startswith(prefix))


def _values(name: str, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    if name.endswith(".bias"):
        return np.zeros(shape, np.float16)
    if len(shape) == 1:
        return np.ones(shape, np.float16)
    fan_in = math.prod(shape[1:])
    scale = 0.02 if "embedding" in name else 1 / math.sqrt(fan_in)
    return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16)


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write the checkpoint (fp16 safetensors, about 2.1 GB) atomically to ``path``."""
    shapes = tensors()
    rng = np.random.default_rng(seed)
    header: dict[str, dict] = {"__metadata__": {"format": "pt", "tower_generator": GENERATOR_VERSION}}
    offset = 0
    for name, shape in shapes.items():
        size = math.prod(shape) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    positions = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    header[positions] = {"dtype": "I64", "shape": [1, CLIP_POSITIONS], "data_offsets": [offset, offset + 8 * CLIP_POSITIONS]}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("wb") as out:
        out.write(struct.pack("<Q", len(encoded)) + encoded)
        for name, shape in shapes.items():
            out.write(_values(name, shape, rng).tobytes())
        out.write(np.arange(CLIP_POSITIONS, dtype="<i8").reshape(1, -1).tobytes())
    os.replace(temp, path)
    return path
