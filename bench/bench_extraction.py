"""Inference on the CPU, batch 1 x max_seq_len: supernet vs extracted vs TransformerEncoder.

Three ways to run the same network, timed interleaved in one run (round-robin, median of
the rounds) so that machine noise hits all of them alike:
  - the supernet running an arch (weights sliced at every call),
  - the extracted static model of that arch,
  - for the all-softmax-attention arch at the largest width, heads, FFN and depth,
    torch.nn.TransformerEncoder of the same dimensions with the same embeddings and head,
    loaded with the same weights (outputs are checked equal first), which is what a user
    would write instead. Timed causal and bidirectional, --rounds rounds each.
Then the slicing overhead (supernet / extracted) on --samples archs drawn by
`space.sample_many(--samples, seed=1)`, max(20, --rounds // 2) rounds each (30 by default).

The space defaults to bench/spaces/wide.yaml (the former default space, 256 tokens), which
the README's figures come from; the all-attention arch needs heads x head_dim == d_model at
the largest choices, which the shipped default space (64-192 wide, 8 x 16 heads) lacks.
Threads default to torch's own default (torch.get_num_threads(): the cores available).

Usage: python bench/bench_extraction.py [--space FILE] [--rounds 60] [--threads N]
           [--samples 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import nas
from nas import Arch, LayerArch

WIDE_SPACE = Path(__file__).resolve().parent / "spaces" / "wide.yaml"


class EncoderLM(nn.Module):
    """What a user would write: embeddings + nn.TransformerEncoder + LayerNorm + head."""

    def __init__(
        self, vocab: int, seq_len: int, d: int, heads: int, ffn: int, depth: int, causal: bool
    ):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(seq_len, d))
        layer = nn.TransformerEncoderLayer(
            d, heads, ffn, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.causal = causal

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        seq_len = tokens.shape[1]
        x = self.tok(tokens) + self.pos[:seq_len]
        if self.causal:
            mask = nn.Transformer.generate_square_subsequent_mask(seq_len)
            x = self.encoder(x, mask=mask, is_causal=True)
        else:
            x = self.encoder(x)
        return self.head(self.norm(x))


def encoder_from_static(model: nas.StaticModel) -> EncoderLM:
    """An EncoderLM holding exactly the weights of an all-attention extracted model."""
    arch, consts = model.arch, model.consts
    layer0 = arch.layers[0]
    ref = EncoderLM(
        consts.vocab_size,
        consts.max_seq_len,
        arch.d_model,
        layer0.heads,
        layer0.ffn,
        arch.depth,
        consts.causal,
    )
    sd = model.state_dict()
    with torch.no_grad():
        ref.tok.weight.copy_(sd["embedding.tok"])
        ref.pos.copy_(sd["embedding.pos"])
        for i, layer in enumerate(ref.encoder.layers):
            p = f"blocks.{i}."
            layer.self_attn.in_proj_weight.copy_(sd[p + "mixer.w_qkv"])
            layer.self_attn.in_proj_bias.copy_(sd[p + "mixer.b_qkv"])
            layer.self_attn.out_proj.weight.copy_(sd[p + "mixer.w_out"])
            layer.self_attn.out_proj.bias.copy_(sd[p + "mixer.b_out"])
            layer.norm1.weight.copy_(sd[p + "norm_mix.weight"])
            layer.norm1.bias.copy_(sd[p + "norm_mix.bias"])
            layer.norm2.weight.copy_(sd[p + "norm_ffn.weight"])
            layer.norm2.bias.copy_(sd[p + "norm_ffn.bias"])
            layer.linear1.weight.copy_(sd[p + "ffn.w1"])
            layer.linear1.bias.copy_(sd[p + "ffn.b1"])
            layer.linear2.weight.copy_(sd[p + "ffn.w2"])
            layer.linear2.bias.copy_(sd[p + "ffn.b2"])
        ref.norm.weight.copy_(sd["exit_head.norm_weight"])
        ref.norm.bias.copy_(sd["exit_head.norm_bias"])
        ref.head.weight.copy_(sd["exit_head.w_out"])
        ref.head.bias.copy_(sd["exit_head.b_out"])
    return ref.eval()


def time_interleaved(fns: dict[str, callable], rounds: int, warmup: int = 10) -> dict[str, float]:
    """Median ms per call of each fn, timed round-robin so drift affects all alike."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            start = time.perf_counter()
            n = 0
            while n < warmup or time.perf_counter() - start < 0.5:
                fn()
                n += 1
        for _ in range(rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--space",
        default=str(WIDE_SPACE),
        help="search space file (default: bench/spaces/wide.yaml, the README figures' space)",
    )
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds per mode")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads"
    )
    parser.add_argument("--samples", type=int, default=8, help="random archs for the slicing ratio")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = nas.SearchSpace.from_file(args.space)
    net = nas.Supernet(space, seed=0).eval()
    tokens = torch.randint(
        0, space.vocab_size, (1, space.max_seq_len), generator=torch.Generator().manual_seed(0)
    )
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch 1 x {space.max_seq_len} "
        f"tokens, {args.rounds} interleaved rounds, median ms"
    )

    # 1. All-softmax-attention arch at full width vs TransformerEncoder with the same weights,
    # causal (the default space: a user passes a causal mask) and bidirectional (no mask,
    # where TransformerEncoder may take its fused inference fast path).
    d, heads, ffn = space.d_model[-1], space.heads[-1], space.ffn[-1]
    if heads * space.head_dim != d:
        raise SystemExit("bench needs heads * head_dim == d_model at the largest choices")
    attn = Arch(d, (LayerArch("attention", heads=heads, ffn=ffn),) * space.max_depth)
    for causal in (True, False):
        mode_space = dataclasses.replace(space, causal=causal)
        mode_net = nas.Supernet(mode_space, seed=0).eval()
        static = mode_net.extract(attn).eval()
        encoder = encoder_from_static(static)
        with torch.inference_mode():
            torch.testing.assert_close(encoder(tokens), static(tokens), rtol=1e-4, atol=1e-4)
        t = time_interleaved(
            {
                "supernet": lambda n=mode_net: n(tokens, attn),
                "extracted": lambda m=static: m(tokens),
                "encoder": lambda e=encoder: e(tokens),
            },
            args.rounds,
        )
        print(
            f"\n{'causal' if causal else 'bidirectional'} all-attention arch d={d} heads={heads} "
            f"ffn={ffn} depth={space.max_depth} (outputs equal to TransformerEncoder's):"
        )
        print(f"  {'supernet':<28}{t['supernet']:8.2f} ms")
        print(f"  {'extracted model':<28}{t['extracted']:8.2f} ms")
        print(f"  {'nn.TransformerEncoder':<28}{t['encoder']:8.2f} ms")
        ratio = t["extracted"] / t["encoder"]
        print(f"  extracted / TransformerEncoder = {ratio:.3f}  (target <= 1.10)")
        overhead = t["supernet"] / t["extracted"]
        print(f"  supernet / extracted           = {overhead:.3f}  (target <= 1.30)")

    # 2. Slicing overhead on random archs of every mixer.
    print(f"\nslicing overhead on {args.samples} random archs (supernet / extracted):")
    ratios = []
    for arch in space.sample_many(args.samples, seed=1):
        sub = net.extract(arch).eval()
        t = time_interleaved(
            {
                "supernet": lambda arch=arch: net(tokens, arch),
                "extracted": lambda sub=sub: sub(tokens),
            },
            max(20, args.rounds // 2),
        )
        ratios.append(t["supernet"] / t["extracted"])
        print(
            f"  {arch.id}  {t['extracted']:7.2f} ms extracted  {t['supernet']:7.2f} ms supernet"
            f"  ratio {ratios[-1]:.3f}"
        )
    print(
        f"  median ratio {statistics.median(ratios):.3f}, max {max(ratios):.3f}  (target <= 1.30)"
    )


if __name__ == "__main__":
    main()
