#!/usr/bin/env python3
"""PyTorch twin of `sweep bench train`: the same model, optimiser and batch, timed the same way.

Architecture (as crates/sweep-train/src/model.rs): token embedding, n_layers blocks of
RMSNorm -> causal self-attention with RoPE (rotate-half) -> residual, RMSNorm -> SwiGLU or
tanh-GELU MLP -> residual; final RMSNorm; output projection tied to the embedding; no biases.
Init N(0, 0.02), output projections scaled by 1/sqrt(2 n_layers), norms at 1.
Optimiser: AdamW(lr 1e-3, betas (0.9, 0.95), eps 1e-8), weight decay 0.1 on matrices only,
global gradient-norm clipping at 1.0. Random tokens; targets are the inputs shifted by one.

Prints one JSON object with tokens_per_second, step_ms (median), forward_ms, backward_ms,
optimizer_ms (means), peak_rss_mb, final_loss, threads.
"""

import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        d = a.d_model
        self.n_heads = a.heads
        self.input_layernorm = RMSNorm(d, 1e-5)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.post_attention_layernorm = RMSNorm(d, 1e-5)
        self.ffn = a.ffn
        if a.ffn == "swiglu":
            self.gate_proj = nn.Linear(d, a.d_ff, bias=False)
        self.up_proj = nn.Linear(d, a.d_ff, bias=False)
        self.down_proj = nn.Linear(a.d_ff, d, bias=False)
        self.sdpa = a.sdpa

    def forward(self, x, cos, sin, mask):
        b, t, d = x.shape
        h, hd = self.n_heads, d // self.n_heads
        hn = self.input_layernorm(x)
        q, k, v = (p(hn).view(b, t, h, hd).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd)) + mask
            y = att.softmax(-1) @ v
        x = x + self.o_proj(y.transpose(1, 2).reshape(b, t, d))
        hn = self.post_attention_layernorm(x)
        if self.ffn == "swiglu":
            inner = F.silu(self.gate_proj(hn)) * self.up_proj(hn)
        else:
            inner = F.gelu(self.up_proj(hn), approximate="tanh")
        return x + self.down_proj(inner)


class Transformer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.d_model)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.d_model, 1e-5)
        hd = a.d_model // a.heads
        inv = 1.0 / (10_000.0 ** (torch.arange(0, hd // 2, dtype=torch.float64) * 2.0 / hd))
        freqs = torch.outer(torch.arange(a.ctx, dtype=torch.float64), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)
        self.register_buffer("mask", torch.full((a.ctx, a.ctx), float("-inf")).triu(1), persistent=False)
        residual = 1.0 / math.sqrt(2 * a.layers)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 * residual if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, tokens):
        t = tokens.shape[1]
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, self.cos[:t], self.sin[:t], self.mask[:t, :t])
        return self.norm(x) @ self.embed_tokens.weight.t()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=None)
    p.add_argument("--ffn", choices=["swiglu", "gelu"], default="swiglu")
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sdpa", action="store_true", help="fused scaled_dot_product_attention instead of eager attention")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: torch.autocast (f32 master weights), as sweep's bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    a = p.parse_args()
    if a.d_ff is None:
        # As `sweep bench train`: 4 d for GELU, 8/3 d rounded up to a multiple of 32 for SwiGLU.
        ceil_div = lambda x, m: -(-x // m)
        a.d_ff = 4 * a.d_model if a.ffn == "gelu" else ceil_div(ceil_div(8 * a.d_model, 3), 32) * 32
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = Transformer(a).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    n = a.batch * a.ctx
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, a.vocab, (n + 1,), generator=g)
    x = tokens[:n].view(a.batch, a.ctx).to(dev)
    y = tokens[1:].view(a.batch, a.ctx).to(dev)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fwd_model = torch.compile(model) if a.compile else model
    autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")
    fwd = bwd = optim = 0.0
    times = []
    loss = None
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        with autocast():
            logits = fwd_model(x)
            loss = F.cross_entropy(logits.view(n, a.vocab).float(), y.reshape(n))
        sync()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()
        t3 = time.perf_counter()
        if s >= a.warmup:
            fwd += t1 - t0
            bwd += t2 - t1
            optim += t3 - t2
            times.append(t3 - t0)
    k = a.steps
    print(json.dumps({
        "tokens_per_second": n * k / sum(times),
        "step_ms": statistics.median(times) * 1e3,
        "forward_ms": fwd / k * 1e3,
        "backward_ms": bwd / k * 1e3,
        "optimizer_ms": optim / k * 1e3,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "final_loss": loss.item(),
        "threads": torch.get_num_threads(),
        "d_ff": a.d_ff,
        "ffn": a.ffn,
        "torch": torch.__version__,
        "device": a.device,
        "precision": a.precision,
        "compile": a.compile,
        "sdpa": a.sdpa,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }))


if __name__ == "__main__":
    main()
