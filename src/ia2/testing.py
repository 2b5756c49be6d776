"""Tiny random models and a byte-level tokenizer, built in-process: fast and offline.

Used by the test suite and by benchmarks' smoke modes; never by real experiments.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

ARCHITECTURES = ("llama", "qwen2", "gpt2", "gemma3_text")
SPECIALS = ["<pad>", "<bos>", "<eos>"]


def tiny_tokenizer(regex: bool = False, extra_merges=()) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (3 specials, 256 bytes, 62 space+alphanumeric merges) that adds
    <bos> like Gemma does. `regex=True` splits text with GPT-2's pattern and merges "\\n\\n"
    as SmolLM2's does (a trailing blank line is one token, a blank line before text two);
    `extra_merges` (pairs of byte-level symbols) add merges after those. Both change the
    vocabulary's size: for tokenization tests, not for models."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    # Space+alphanumeric merges, as real BPE vocabularies have: " positive" and " negative"
    # then start with different tokens, so label words work as in real models.
    merges = [("\u0120", ch) for ch in string.ascii_letters + string.digits]
    merges += [("\u010a", "\u010a")] if regex else []
    merges += list(extra_merges)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=regex)
    tok.decoder = decoders.ByteLevel()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


def tiny_config(arch: str = "llama", vocab_size: int = 321, layers: int = 2, hidden: int = 32):
    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "gpt2":
        return AutoConfig.for_model(
            "gpt2", n_embd=hidden, n_layer=layers, n_head=4, n_positions=512, **common
        )
    kw = dict(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **common,
    )
    if arch == "gemma3_text":
        kw.update(head_dim=8, sliding_window=16, layer_types=None, query_pre_attn_scalar=8)
    return AutoConfig.for_model(arch, **kw)


def tiny_model(arch: str = "llama", seed: int = 0, **kw) -> torch.nn.Module:
    """A randomly initialised causal LM in float32, eval mode, eager attention."""
    torch.manual_seed(seed)
    config = tiny_config(arch, **kw)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    # Random init gives near-uniform logits; scale up so greedy decoding is not a coin toss.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    return model.float().eval()


def crash_once_hook() -> None:
    """A Ray `worker_process_setup_hook` for tests (tests/test_ray.py): once
    `$IA2_TEST_CRASH_DIR/armed` exists, the first worker to evaluate an adapter makes `crashed`
    (holding its pid) and dies on the spot, as a killed or out-of-memory worker would."""
    import os

    from .evaluate import runner

    folder, original = os.environ.get("IA2_TEST_CRASH_DIR"), runner.evaluate_setting
    if not folder:
        return

    def evaluate_setting(model, tokenizer, spec, queries, setting, *args, **kwargs):
        if setting == "adapter" and os.path.exists(os.path.join(folder, "armed")):
            try:  # O_EXCL: of two workers here at once, one crashes
                fd = os.open(os.path.join(folder, "crashed"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os._exit(1)
        return original(model, tokenizer, spec, queries, setting, *args, **kwargs)

    runner.evaluate_setting = evaluate_setting
