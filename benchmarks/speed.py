"""Speed of the LEAF network on this machine, as ratios measured in one run.

- the fused tokenizer (one (65 x 40) convolution built from the two stored weights) against the
  release's two convolutions, for a full STR training step of the small size;
- training and inference throughput in 0.5-s windows per second, small and base sizes;
- bfloat16 autocast against float32 at inference, with the CPU's bf16 support detected.

Run from the repository root: ``.venv/bin/python benchmarks/speed.py`` (about 2 minutes).
"""

from __future__ import annotations

import platform
import time

import torch

from leaf_sk.nn import LeafConfig, STRPretrainer, Tower


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return set()
    return set(flags)


def best_time(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def unfused_forward(tokenizer):
    """The release's tokenizer: temporal conv then spatial conv, per window."""
    def forward(x):
        cfg = tokenizer.config
        batch, n_channels, n_times = x.shape
        n_windows = n_times // cfg.window_samples
        windows = x.reshape(batch, n_channels, n_windows, cfg.window_samples).transpose(1, 2)
        windows = windows.reshape(batch * n_windows, 1, n_channels, cfg.window_samples)
        return tokenizer.enc_conv(windows).reshape(batch, n_windows, cfg.token_dim)
    return forward


def train_step_time(size, batch, n_windows, fused=True):
    torch.manual_seed(0)
    module = STRPretrainer(LeafConfig.from_size(size))
    if not fused:
        module.tower.tokenizer.forward = unfused_forward(module.tower.tokenizer)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    x = torch.randn(batch, 65, n_windows * 100)

    def step():
        loss = module(x)
        opt.zero_grad()
        (loss[0] + loss[1]).backward()
        opt.step()
    return best_time(step, repeats=3)


def inference_time(size, batch, n_windows, dtype=None):
    torch.manual_seed(0)
    tower = Tower(LeafConfig.from_size(size)).eval()
    x = torch.randn(batch, 65, n_windows * 100)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            tower(x)
    return best_time(run)


def main():
    flags = cpu_flags()
    bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    print(f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"native bf16: {bf16} (avx512_bf16={'avx512_bf16' in flags}, amx_bf16={'amx_bf16' in flags})")
    batch, n_windows = 64, 8
    fused = train_step_time("small", batch, n_windows, fused=True)
    unfused = train_step_time("small", batch, n_windows, fused=False)
    windows = batch * n_windows
    print(f"small STR train step, {batch} x 4-s trials: fused tokenizer {windows / fused:.0f} windows/s, "
          f"unfused {windows / unfused:.0f} windows/s, speed-up x{unfused / fused:.2f}")
    for size in ("small", "base"):
        fp32 = inference_time(size, batch, n_windows)
        line = f"{size} inference: fp32 {windows / fp32:.0f} windows/s"
        bf = inference_time(size, batch, n_windows, dtype=torch.bfloat16)
        line += f", bf16 autocast {windows / bf:.0f} windows/s (bf16/fp32 speed x{fp32 / bf:.2f})"
        print(line)
    base_train = train_step_time("base", 16, n_windows)
    print(f"base STR train step: {16 * n_windows / base_train:.0f} windows/s "
          f"(small is x{(windows / fused) / (16 * n_windows / base_train):.1f} faster)")


if __name__ == "__main__":
    main()
