"""A tiny Hugging Face model directory, generated offline in well under a second: the lab's model.

Real enough for a real vLLM to load and serve it (chat and completions, deterministic at
temperature 0), small enough (about 1.4 MB) to seal, push and unseal in every test. It
talks nonsense: its weights are seeded random numbers. Nothing is downloaded and nothing
beyond the standard library is needed, so the controller's environment stays light:

- ``tokenizer.json``: a byte-level BPE with no merges (one token per byte, like GPT-2's
  byte alphabet) and three ChatML special tokens, plus ``tokenizer_config.json`` with a
  chat template so ``/v1/chat/completions`` works;
- ``config.json`` and ``model.safetensors``: a 2-layer LlamaForCausalLM, float32, hidden
  128, head_dim 32 (a size vLLM's CPU attention supports: 16 passes /health and then fails
  the first request), tied embeddings.

Example::

    >>> from pathlib import Path; import tempfile
    >>> sorted(p.name for p in write_tiny_model(Path(tempfile.mkdtemp())).iterdir())
    ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']
"""

from __future__ import annotations

import json
import random
import struct
from array import array
from pathlib import Path

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VOCAB = 384  # 256 bytes + the specials, rounded up; unused rows are never sampled
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 128, 256, 2, 4, 2, 32
MAX_LEN = 256
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte value (what a ByteLevel pre-tokenizer emits)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tokenizer() -> dict:
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    specials = [{"id": 256 + i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True} for i, token in enumerate(SPECIALS)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {char: i for i, char in enumerate(byte_alphabet())}, "merges": []},
    }


def config() -> dict:
    eos = 256 + SPECIALS.index("<|im_end|>")
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "max_position_embeddings": MAX_LEN, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        "tie_word_embeddings": True, "torch_dtype": "float32", "bos_token_id": 256 + SPECIALS.index("<|im_start|>"),
        "eos_token_id": eos, "pad_token_id": 256,
    }


def shapes() -> dict[str, tuple[int, ...]]:
    found: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        layer = f"model.layers.{i}"
        found |= {
            f"{layer}.input_layernorm.weight": (HIDDEN,),
            f"{layer}.post_attention_layernorm.weight": (HIDDEN,),
            f"{layer}.self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
            f"{layer}.self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            f"{layer}.self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            f"{layer}.self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
            f"{layer}.mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
            f"{layer}.mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
            f"{layer}.mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
        }
    return found


def safetensors(seed: int) -> bytes:
    """The safetensors file: an 8-byte header length, a JSON header, then raw little-endian F32."""
    rng = random.Random(seed)
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, shape in sorted(shapes().items()):
        count = 1
        for n in shape:
            count *= n
        # Norms at 1 as a trained model has them; other weights small, as initialisation would.
        values = array("f", [1.0] * count if name.endswith("norm.weight") else (rng.gauss(0.0, 0.05)
                                                                               for _ in range(count)))
        data = values.tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format's alignment of the data that follows
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write_tiny_model(directory: Path, seed: int = 0) -> Path:
    """Write the model into `directory` (created); the same seed gives the same bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    documents = {
        "config.json": config(),
        "generation_config.json": {"eos_token_id": config()["eos_token_id"], "pad_token_id": 256},
        "tokenizer.json": tokenizer(),
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MAX_LEN, "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "bos_token": None, "unk_token": None, "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
        },
    }
    for name, document in documents.items():
        (directory / name).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (directory / "model.safetensors").write_bytes(safetensors(seed))
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory
