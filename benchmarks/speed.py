"""Inference speed of the LEAF estimators against this machine's matrix-product rate, in one run.

Prints, and records in benchmarks/RESULTS.md (between the ``speed`` markers), for 4-s trials of
the 65 template channels at 200 Hz and random weights of the "base" and "small" sizes:

- the CPU model and flags, and the fp32 (and, where native, bf16) matrix-product rate;
- the network alone (Tower forward, folded tokenizer) at batches 1, 32 and 256: trials/s,
  achieved GFLOP/s and its share of the matrix rate; beside it a straightforward
  implementation (the release's two convolutions, then the same nn.TransformerEncoder layers);
- LeafEncoder.transform and LeafInstructionClassifier.predict (zero-shot, one forward pass
  per trial: ``test_crops=0``; the default 5 shifted crops cost about 5 more) in trials/s,
  preprocessing included, the share of transform time spent preprocessing, and the latency of
  one trial (batch_size=1);
- the STR training step with the fused tokenizer against the release's two convolutions;
- the packaged checkpoint's classifier: band power from the tokens' product against a
  convolution of its own, and fine-tuning with the frozen Towers run once against every step.

Every figure comes from this one run; the machine may be shared, so compare ratios within it
(the load average at the start is printed). Run from the repository root:
``python benchmarks/speed.py`` (a few minutes); ``--threads`` sets torch's threads (default 2).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared machine a spinning thread waits at
# every barrier for a descheduled peer (a base trial took 2.5 s instead of 40 ms here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from leaf_sk import LeafEncoder, LeafInstructionClassifier  # noqa: E402
from leaf_sk.classifier import AlignmentModule  # noqa: E402
from leaf_sk._precision import NATIVE_BF16_FLAGS, bf16_is_native, cpu_flags, cpu_model  # noqa: E402
from leaf_sk.montage import TEMPLATE_CH_NAMES  # noqa: E402
from leaf_sk.nn import LeafConfig, STRPretrainer, Tokenizer, Tower, members_of  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
N_WINDOWS = 8                                   # 4-s trials
BATCHES = (1, 32, 256)
TARGETS = {"share": 0.45, "latency_ms": 10.0, "small_trials_s": 1500.0}


def best_time(fn, repeats=3, warm_up=None):
    """Shortest of ``repeats`` timed calls after one warm-up call (``warm_up`` or ``fn``), seconds."""
    (warm_up or fn)()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matrix_rate(dtype, n=2048):
    """GFLOP/s of an n x n x n matrix product."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / best_time(lambda: a @ b, repeats=5) / 1e9


def tower_flop(cfg, n_windows=N_WINDOWS):
    """FLOP of one trial through the Tower with the folded tokenizer (multiply-adds x 2)."""
    n_out = cfg.samples_per_filter * cfg.pool_size
    tokenizer = 2 * n_windows * n_out * cfg.temporal_kernel * cfg.n_channels * cfg.n_filters
    in_proj = 2 * 2 * n_windows * cfg.token_dim * cfg.d_model
    d, ff = cfg.d_model, cfg.d_ff
    layer = 2 * n_windows * (4 * d * d + 2 * d * ff) + 2 * 2 * n_windows ** 2 * d
    return tokenizer + in_proj + 2 * cfg.n_layers * layer


def qformer_flop(cfg, n_windows=N_WINDOWS):
    """FLOP of one trial through the Q-Former."""
    d, q, n_tokens = cfg.d_model, cfg.n_queries, 2 * n_windows
    self_attn = 2 * q * 4 * d * d + 2 * 2 * q * q * d
    cross = 2 * q * 2 * d * d + 2 * n_tokens * 2 * d * d + 2 * 2 * q * n_tokens * d
    ffn = 2 * q * 2 * d * cfg.iqf_d_ff
    return cfg.iqf_layers * (self_attn + cross + ffn) + 2 * q * d * cfg.d_text


def straightforward(tower):
    """The release's computation: two convolutions and BatchNorm as layers, then both branches."""
    def forward(x):
        tokens = tower.tokenizer.unfused(x)
        return torch.cat([tower.contextual(tokens), tower.causal(tokens)], dim=1)
    return forward


def trials(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, len(TEMPLATE_CH_NAMES), N_WINDOWS * 100)) * 20).astype(np.float32)


def estimators(size, batch_size, precision):
    common = dict(checkpoint=None, size=size, ch_names=list(TEMPLATE_CH_NAMES), sfreq=200.0,
                  device="cpu", batch_size=batch_size, precision=precision, random_state=0)
    return {
        "LeafEncoder.transform": (LeafEncoder(**common), "transform"),
        "LeafInstructionClassifier.predict": (LeafInstructionClassifier(
            max_epochs=0, text_encoder="hashing-384", instruction="motor imagery",
            label_texts=["left hand", "right hand"], test_crops=0, **common), "predict"),
    }


def n_trials_for(batch):
    return max(2 * batch, 64) if batch > 1 else 16


def measure_network(size, precision):
    torch.manual_seed(0)
    tower = Tower(LeafConfig.from_size(size)).eval()
    rows = {}
    for batch in BATCHES:
        x = torch.from_numpy(trials(batch))
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                     enabled=precision == "bfloat16"):
            fused = best_time(lambda: tower(x))
            plain = (best_time(lambda: straightforward(tower)(x), repeats=1 if batch > 32 else 3)
                     if precision == "float32" else None)
        rows[batch] = (batch / fused, None if plain is None else batch / plain)
    return rows


def measure_estimators(size, precision):
    X = trials(max(n_trials_for(b) for b in BATCHES), seed=1)
    rows, latency, preprocessing = {}, {}, None
    for batch in BATCHES:
        n = n_trials_for(batch)
        for name, (estimator, method) in estimators(size, batch, precision).items():
            estimator.fit(X[:2])
            run = getattr(estimator, method)
            rows[(name, batch)] = n / best_time(lambda: run(X[:n]), 2, lambda: run(X[:batch]))
            if name.endswith("transform") and batch == BATCHES[-1]:
                prep = best_time(lambda: [None for _ in estimator._template_blocks(X[:n])], 2)
                preprocessing = prep * rows[(name, batch)] / n
            if batch == 1:
                one = X[:1]
                run(one)
                times = []
                for _ in range(15):
                    start = time.perf_counter()
                    run(one)
                    times.append(time.perf_counter() - start)
                latency[name] = 1e3 * statistics.median(times)
    return rows, latency, preprocessing


def train_step_ratio(batch=64):
    """windows/s of a small STR training step, fused tokenizer and the release's two convolutions."""
    rates = []
    for fused in (True, False):
        torch.manual_seed(0)
        module = STRPretrainer(LeafConfig.from_size("small"))
        tokenizer = module.tower.tokenizer
        if not fused:
            tokenizer.forward = tokenizer.unfused
        opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
        x = torch.randn(batch, 65, N_WINDOWS * 100)

        def step():
            loss = module(x)
            opt.zero_grad()
            (loss[0] + loss[1]).backward()
            opt.step()
        rates.append(batch * N_WINDOWS / best_time(step, repeats=2))
    return rates


def _tokens_and_log_power_apart(tokenizer, x, eps=1e-6):
    """The earlier path: the band power from a convolution of its own, beside the tokens."""
    return tokenizer(x), tokenizer._log_power_by_convolution(x, eps)


def packaged_rates(n_trials=24):
    """Trials/s of the packaged checkpoint's classifier with the band power read from the
    tokens' matrix product (``Tokenizer.tokens_and_log_power``) and computed apart: predict
    (default crops) and fit (one fine-tuning epoch, Towers frozen); and of fit with the default 5
    epochs, the frozen Towers' outputs computed once before training (``"fit-5"``, True) and
    at every step.

    2-s trials of 8 occipital channels at 256 Hz, as Kalunga2016's.

    Returns
    -------
    rates : dict
        ``(method, shared)`` to trials/s.
    n_members : int
    """
    rng = np.random.default_rng(2)
    X = (rng.standard_normal((n_trials, 8, 512)) * 10).astype(np.float32)
    y = np.arange(n_trials) % 3
    clf = LeafInstructionClassifier(
        ch_names=["O1", "O2", "Oz", "PO3", "POz", "PO4", "PO7", "PO8"], sfreq=256.0,
        instruction="SSVEP", label_texts=["13 Hz", "17 Hz", "21 Hz"], max_epochs=1,
        device="cpu", precision="float32", random_state=0).fit(X[:6], y[:6])
    shared_path = Tokenizer.tokens_and_log_power
    rates = {}
    try:
        for shared in (True, False):
            Tokenizer.tokens_and_log_power = shared_path if shared else _tokens_and_log_power_apart
            rates[("predict", shared)] = n_trials / best_time(lambda: clf.predict(X), 2)
            rates[("fit", shared)] = n_trials / best_time(lambda: clf.fit(X, y), 1)
    finally:
        Tokenizer.tokens_and_log_power = shared_path
    kept_path = AlignmentModule.tower_inputs
    clf.set_params(max_epochs=5)
    try:
        for kept in (True, False):
            AlignmentModule.tower_inputs = kept_path if kept else _tower_inputs_not_kept
            rates[("fit-5", kept)] = n_trials / best_time(lambda: clf.fit(X, y), 1)
    finally:
        AlignmentModule.tower_inputs = kept_path
    return rates, len(members_of(clf.module_.model))


def _tower_inputs_not_kept(module, data, batch_size, device):
    """The earlier path: the frozen Towers run at every training step."""
    return data


def progress(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fmt(value, digits=0):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def run(threads):
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    flags = cpu_flags()
    native = bf16_is_native("cpu")
    shown = [f for f in ("avx2", "fma", "avx512f", *NATIVE_BF16_FLAGS, "amx_tile") if f in flags]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"CPU: {cpu_model()}, {os.cpu_count()} cores; flags: {', '.join(shown) or 'none'}; "
             f"native bf16: {native}. torch {torch.__version__}, {threads} threads "
             f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); "
             f"load average at start {load:.1f} (the machine may be shared: compare within this run).",
             ""]
    fp32_rate = matrix_rate(torch.float32)
    bf16_rate = matrix_rate(torch.bfloat16) if native else None
    lines.append(f"Matrix-product rate (2048^3): fp32 {fp32_rate:.0f} GFLOP/s; bf16 "
                 + (f"{bf16_rate:.0f} GFLOP/s" if native else "not native here (not measured: "
                    "emulated, about 100x slower than fp32 on an AVX2-only CPU)") + ".")
    lines.append("")
    precisions = ["float32"] + (["bfloat16"] if native else [])
    results = {}
    for precision in precisions:
        for size in ("base", "small"):
            progress(f"{size} {precision}: network")
            network = measure_network(size, precision)
            progress(f"{size} {precision}: estimators")
            results[(size, precision)] = (network, *measure_estimators(size, precision))
    progress("training step")
    lines += ["| size, precision | FLOP/trial | batch | network trials/s | GFLOP/s | share of matrix rate "
              "| straightforward trials/s | fused / straightforward | LeafEncoder.transform trials/s "
              "| LeafInstructionClassifier.predict trials/s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    checks = []
    for (size, precision), (network, rows, latency, preprocessing) in results.items():
        cfg = LeafConfig.from_size(size)
        flop = tower_flop(cfg)
        rate = fp32_rate if precision == "float32" else bf16_rate
        for batch in BATCHES:
            fused, plain = network[batch]
            gflops = fused * flop / 1e9
            lines.append(
                f"| {size}, {precision} | {flop / 1e9:.2f} G | {batch} | {fmt(fused, 1)} | {gflops:.1f} "
                f"| {gflops / rate:.0%} | {fmt(plain, 1)} | "
                f"{'n/a' if plain is None else f'x{fused / plain:.2f}'} "
                f"| {fmt(rows[('LeafEncoder.transform', batch)], 1)} "
                f"| {fmt(rows[('LeafInstructionClassifier.predict', batch)], 1)} |")
        best_share = max(network[b][0] for b in BATCHES) * flop / 1e9 / rate
        checks.append((f"{size} {precision}: best network share of the {precision} matrix rate",
                       f"{best_share:.0%}", f">= {TARGETS['share']:.0%}", best_share >= TARGETS["share"]))
        lat = latency["LeafEncoder.transform"]
        checks.append((f"{size} {precision}: one trial, LeafEncoder.transform (batch_size=1, median)",
                       f"{lat:.1f} ms", f"< {TARGETS['latency_ms']:.0f} ms" if size == "base" else "-",
                       lat < TARGETS["latency_ms"] if size == "base" else None))
        checks.append((f"{size} {precision}: one trial, LeafInstructionClassifier.predict",
                       f"{latency['LeafInstructionClassifier.predict']:.1f} ms", "-", None))
        if size == "small":
            best_small = max(value for value in rows.values())
            checks.append((f"small {precision}: best estimator throughput", f"{best_small:,.0f} trials/s",
                           f"> {TARGETS['small_trials_s']:,.0f}", best_small > TARGETS["small_trials_s"]))
        checks.append((f"{size} {precision}: preprocessing share of LeafEncoder.transform "
                       f"(batch {BATCHES[-1]})", f"{preprocessing:.0%}", "(reported)", None))
    fused_rate, plain_rate = train_step_ratio()
    checks.append(("small STR training step, fused tokenizer vs two convolutions",
                   f"{fused_rate:,.0f} vs {plain_rate:,.0f} windows/s: x{fused_rate / plain_rate:.2f}",
                   "(reported)", None))
    progress("packaged checkpoint")
    rates, n_members = packaged_rates()
    for method in ("predict", "fit"):
        shared, apart = rates[(method, True)], rates[(method, False)]
        checks.append((f"packaged leaf-small-bci ({n_members} members), LeafInstructionClassifier."
                       f"{method}{' (5 crops)' if method == 'predict' else ' (1 epoch)'}: band power "
                       "from the tokens' product vs a convolution of its own",
                       f"{shared:,.1f} vs {apart:,.1f} trials/s: x{shared / apart:.2f}",
                       "(reported)", None))
    kept, every_step = rates[("fit-5", True)], rates[("fit-5", False)]
    checks.append((f"packaged leaf-small-bci, LeafInstructionClassifier.fit (5 epochs, Towers "
                   "frozen): their outputs computed once vs at every step",
                   f"{kept:,.1f} vs {every_step:,.1f} trials/s: x{kept / every_step:.2f}",
                   "(reported)", None))
    lines += ["", "| figure | measured | target | met |", "|---|---|---|---|"]
    for what, value, target, met in checks:
        lines.append(f"| {what} | {value} | {target} | {'' if met is None else ('yes' if met else 'no')} |")
    return "\n".join(lines)


def record(table, path=RESULTS):
    """Replace the text between the speed markers of ``path`` with ``table``."""
    text = path.read_text()
    block = f"{BEGIN}\n{table}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path} has no {BEGIN} ... {END} section to replace.")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(pattern.sub(lambda _: block, text))
    tmp.replace(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md")
    args = parser.parse_args()
    table = run(args.threads)
    print(table)
    if not args.no_record:
        record(table)
        print(f"\nrecorded in {RESULTS.name}")


if __name__ == "__main__":
    main()
