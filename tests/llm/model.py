"""A tiny llama-architecture GGUF that a real llama.cpp runtime loads, written here with the
``gguf`` package, so the LLM planner is tested against a real OpenAI-compatible server without
downloading a model.

The model is not trained, and not random either: every token embeds to the same vector and the
blocks add nothing, so the last hidden state is the same at every position and the logits are a
fixed ranking of the vocabulary (:data:`PREFERENCE` first). Greedy decoding under a grammar is
then deterministic: of the tokens the grammar allows, the best ranked. With the ranking below a
JSON Schema grammar yields the shortest valid document: strings of one character, one array
item where one is required, numbers of one digit (1, inside the planner's ranges).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

# Highest first: close what is open, end a value as soon as it may end, then a digit, a letter.
PREFERENCE = ('"', "]", "}", ",", "1", "a", ":", "{", "[", ".")
# SentencePiece token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def vocabulary() -> tuple[list[str], list[int]]:
    """<unk>, <s>, </s>, the 256 byte tokens, then the space marker and printable ASCII."""
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "\u2581", *map(chr, range(0x21, 0x7F))]
    types = [UNKNOWN, CONTROL, CONTROL, *[BYTE] * 256, *[NORMAL] * (len(tokens) - 259)]
    return tokens, types


def write_constant_model(path: Path, *, embedding: int = 32, heads: int = 2, feed_forward: int = 32,
                         context: int = 4096) -> Path:
    tokens, types = vocabulary()
    ranking = np.where(np.array(types) == NORMAL, -5.0, -10.0).astype(np.float32)  # bytes, controls last
    ranking[tokens.index("\u2581")] = -8.0  # whitespace only where nothing else may come
    for rank, text in enumerate(PREFERENCE):
        ranking[tokens.index(text)] = 10.0 - rank
    hidden = np.zeros(embedding, dtype=np.float32)
    hidden[0] = np.sqrt(embedding)  # RMS 1, so the final norm leaves it as it is
    output = np.zeros((len(tokens), embedding), dtype=np.float32)
    output[:, 0] = ranking / np.sqrt(embedding)  # logits = output @ hidden = ranking
    return _write_llama(path, "tower-test-constant-ranking", np.tile(hidden, (len(tokens), 1)), output,
                        heads=heads, feed_forward=feed_forward, context=context)


def write_embedding_model(path: Path, *, embedding: int = 64, seed: int = 7) -> Path:
    """A model for ``/v1/embeddings``: each token embeds to its own random vector and the blocks add
    nothing, so a text's mean-pooled embedding is the mean of its (normalised) character vectors:
    the same text, the same vector; texts of the same letters, near vectors."""
    tokens, _ = vocabulary()
    token_embd = np.random.default_rng(seed).standard_normal((len(tokens), embedding)).astype(np.float32)
    return _write_llama(path, "tower-test-bag-of-characters", token_embd,
                        np.zeros((len(tokens), embedding), dtype=np.float32), pooling=gguf.PoolingType.MEAN)


def _write_llama(path: Path, name: str, token_embd: np.ndarray, output: np.ndarray, *, heads: int = 2,
                 feed_forward: int = 32, context: int = 4096, pooling: gguf.PoolingType | None = None) -> Path:
    """One llama block that adds nothing (zero attention and feed-forward weights), over the byte
    vocabulary of :func:`vocabulary`, with these token embeddings and output head."""
    tokens, types = vocabulary()
    embedding = token_embd.shape[1]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_block_count(1)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(embedding // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    if pooling is not None:
        writer.add_pooling_type(pooling)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>")

    ones, zeros = np.ones(embedding, dtype=np.float32), np.zeros((embedding, embedding), dtype=np.float32)
    writer.add_tensor("token_embd.weight", token_embd)
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", output)
    writer.add_tensor("blk.0.attn_norm.weight", ones)
    for tensor in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{tensor}.weight", zeros)
    writer.add_tensor("blk.0.ffn_norm.weight", ones)
    writer.add_tensor("blk.0.ffn_gate.weight", np.zeros((feed_forward, embedding), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_up.weight", np.zeros((feed_forward, embedding), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_down.weight", np.zeros((embedding, feed_forward), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
