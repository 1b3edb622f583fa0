"""PyTorch peer for `l2l bench train`: trains the same GPT-2 shapes for the same steps on the same GPU.

Run it in the same session as the engine's benchmark so the ratio ours/PyTorch is measured side by
side, e.g.
    python3 bench/pytorch/train_gpt2.py --model gpt2-medium --batch 8 --seq 1024 --steps 10 --dtype bf16 --out bench/results/pytorch-...json
It prints (and optionally writes) one JSON object with the median tokens/s after warm-up, peak
device memory and the machine it ran on. The model mirrors the engine's: pre-LayerNorm blocks, fused
q,k,v, causal attention, 4x MLP with tanh GELU, LM head tied to the token embedding, AdamW.
"""
import argparse
import json
import math
import platform
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {  # vocab_size, n_positions, n_embd, n_layer, n_head (Hugging Face GPT-2 sizes)
    "gpt2-tiny": (256, 128, 64, 4, 4),
    "gpt2": (50257, 1024, 768, 12, 12),
    "gpt2-medium": (50257, 1024, 1024, 24, 16),
    "gpt2-large": (50257, 1024, 1280, 36, 20),
    "gpt2-xl": (50257, 1024, 1600, 48, 25),
}


class Block(nn.Module):
    def __init__(self, c, nh):
        super().__init__()
        self.nh = nh
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.attn_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.nh, c // self.nh).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, positions, c, layers, heads):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(positions, c)
        self.h = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied head
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--out")
    args = ap.parse_args()

    torch.manual_seed(1337)
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32, as in the engine
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda"
    vocab, positions, c, layers, heads = PRESETS[args.model]
    model = GPT(vocab, positions, c, layers, heads).to(device)
    # Weight decay 0, as the engine's default; fused AdamW, the fastest PyTorch offers on a GPU.
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    tokens = torch.randint(0, vocab, (args.batch, args.seq + 1), device=device)
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    times, losses = [], []
    torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            loss = model(inputs, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
            losses.append(loss.item())

    step_s = statistics.median(times)
    report = {
        "framework": f"pytorch {torch.__version__}",
        "device": torch.cuda.get_device_name(),
        "machine": {"cpu": platform.processor() or platform.machine(), "os": platform.platform()},
        "model": args.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": args.batch,
        "seq": args.seq,
        "dtype": args.dtype,
        "measured_steps": args.steps,
        "step_s": step_s,
        "tokens_per_s": args.batch * args.seq / step_s,
        "device_peak_bytes": torch.cuda.max_memory_allocated(),
        "last_loss": losses[-1],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
