"""Writes summary.md (and devices.json, kernel-tests.json, steps.json) from the results check.sh left in OUTDIR.

    python3 bench/gpu/summary.py OUTDIR [--mode TEXT] [--budget S] [--elapsed S]

Every figure names the file it comes from; a missing file gives a line saying so, never a guess.
"""
import argparse
import glob
import json
import os
import re
import xml.etree.ElementTree as ET

# Dense peak FLOP/s by device name: FP32 without tensor cores (the engine's arithmetic) and BF16 tensor cores.
# L2L_PEAK_TFLOPS=fp32[,bf16] overrides for a device not listed.
PEAKS = [("H200", 67e12, 989e12), ("H100", 67e12, 989e12), ("A100", 19.5e12, 312e12), ("L40S", 91.6e12, 362e12), ("A10", 31.2e12, 125e12)]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def peak_for(device):
    env = os.environ.get("L2L_PEAK_TFLOPS")
    if env:
        parts = [float(x) * 1e12 for x in env.split(",")]
        return parts[0], parts[1] if len(parts) > 1 else None, "L2L_PEAK_TFLOPS"
    for name, fp32, bf16 in PEAKS:
        if device and name in device:
            return fp32, bf16, f"{name} datasheet"
    return None, None, None


def fmt(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def sig(x):
    return "n/a" if x is None else f"{x:.4g}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mode", default="GPU")
    ap.add_argument("--budget", type=int, default=0)
    ap.add_argument("--elapsed", type=int, default=0)
    a = ap.parse_args()
    out = a.out
    md = [f"# L2L check: {a.mode}", ""]

    # Steps and what was skipped.
    steps = []
    if os.path.exists(f"{out}/steps.tsv"):
        with open(f"{out}/steps.tsv") as f:
            rows = [line.rstrip("\n").split("\t") for line in f][1:]
        steps = [{"step": r[0], "status": r[1], "seconds": int(r[2]), "note": r[3] if len(r) > 3 else ""} for r in rows]
    with open(f"{out}/steps.json", "w") as f:
        json.dump({"budget_s": a.budget, "elapsed_s": a.elapsed, "steps": steps}, f, indent=2)
    md += [f"Budget {a.budget} s, used {a.elapsed} s. Steps:", "", "| step | status | s | note |", "|---|---|---|---|"]
    md += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s['note']} |" for s in steps]
    md.append("")

    # Devices.
    text = open(f"{out}/devices.txt").read() if os.path.exists(f"{out}/devices.txt") else ""
    with open(f"{out}/devices.json", "w") as f:
        json.dump({"text": text.splitlines()}, f, indent=2)
    md += ["## Devices (`l2l devices`)", "", "```", text.strip() or "(not run)", "```", ""]

    # Kernel tests, per test.
    md += ["## Kernel tests (kernel-tests.json)", ""]
    tests = []
    if os.path.exists(f"{out}/kernel-tests.xml"):
        for t in ET.parse(f"{out}/kernel-tests.xml").getroot().iter("test"):
            failure = t.find("failure")
            message = failure.findtext("message", "").strip().splitlines()[0][:300] if failure is not None and failure.findtext("message") else ""
            tests.append({"name": t.get("name"), "result": t.get("result"), "seconds": float(t.get("time") or 0), "message": message})
        with open(f"{out}/kernel-tests.json", "w") as f:
            json.dump(tests, f, indent=2)
        for kind in ("Cuda", "Cpu", "OpenCL"):
            sel = [t for t in tests if f"kind: {kind}" in (t["name"] or "")]
            if sel:
                count = {r: sum(1 for t in sel if t["result"] == r) for r in ("Pass", "Fail", "Skip")}
                md.append(f"- {kind}: {count['Pass']} passed, {count['Fail']} failed, {count['Skip']} skipped")
        other = [t for t in tests if "kind: " not in (t["name"] or "")]
        md.append(f"- device-independent: {sum(1 for t in other if t['result'] == 'Pass')} passed, {sum(1 for t in other if t['result'] == 'Fail')} failed")
        for t in tests:
            if t["result"] == "Fail":
                md.append(f"  - FAILED {t['name']}: {t['message']}")
    else:
        md.append("Not run (see the steps table).")
    md.append("")

    # GEMM against cuBLAS.
    md += ["## GEMM, FP32 (gemm.json)", ""]
    gemm = load(f"{out}/gemm.json")
    if gemm:
        md += [f"Device: {gemm['device']}; cuBLAS: {gemm['cublas_status']}.", "",
               "| shape | layout | M×N×K | ours TFLOP/s | cuBLAS TFLOP/s | ours ÷ cuBLAS |", "|---|---|---|---|---|---|"]
        for r in gemm["results"]:
            md.append(f"| {r['name']} | {r['layout']} | {r['m']}×{r['n']}×{r['k']} | {sig(r['tflops'])} | {sig(r['cublas_tflops'])} | {fmt(r['ratio'])} |")
    else:
        md.append("Not measured.")
    md.append("")

    # Attention.
    md += ["## Attention, causal, FP32 (attention-*.json)", ""]
    rows = []
    for path in sorted(glob.glob(f"{out}/attention-*.json")):
        rep = load(path)
        for r in (rep or {}).get("results", []):
            rows.append(f"| {os.path.basename(path)} | {r['b']}×{r['t']}, C={r['c']}, NH={r['nh']} | {r['path']} | {fmt(r['forward_ms'], 3)} | {fmt(r['backward_ms'], 3)} | {sig(r['tflops'])} | {r['workspace_bytes']} |")
    if rows:
        md += ["FLOPs: " + rep["flop_formula"], "", "| file | B×T, shape | kernels | forward ms | backward ms | TFLOP/s | saved + scratch bytes |", "|---|---|---|---|---|---|---|"] + rows
    else:
        md.append("Not measured.")
    md.append("")

    # Bus.
    md += ["## Bus (bus.json)", ""]
    bus = load(f"{out}/bus.json")
    md.append(f"Pinned copies of {bus['bytes']} bytes: host→device {bus['host_to_device_bytes_per_s'] / 1e9:.2f} GB/s, device→host {bus['device_to_host_bytes_per_s'] / 1e9:.2f} GB/s."
              if bus else "Not measured.")
    md.append("")

    # Training: relay vs conventional, MFU, waits.
    md += ["## Training, FP32 (train-*.json)", ""]
    torch_runs = [r for r in (load(p) for p in sorted(glob.glob(f"{out}/pytorch-*.json"))) if r]
    for path in sorted(glob.glob(f"{out}/train-*.json")):
        rep = load(path)
        if not rep:
            continue
        fp32_peak, bf16_peak, source = peak_for(rep["device"])
        flops = rep["model_flops_per_token"]
        md += [f"### {rep['model']} at T={rep['seq']} ({os.path.basename(path)})", "",
               f"Device: {rep['device']}. MFU = tokens/s × {flops / 1e9:.3f} GFLOP/token ÷ peak, with model FLOPs per token = {rep['model_flop_formula']}; "
               + (f"peak FP32 {fp32_peak / 1e12:.1f} TFLOP/s ({source})." if fp32_peak else "peak unknown for this device, so MFU is n/a."), "",
               "| executor | stash | M | U | batch | tokens/s | MFU | device peak MiB | copy wait | update wait | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        results = rep["results"]
        for r in results:
            ok = r["error"] is None
            mfu = r["tokens_per_second"] * flops / fp32_peak if ok and fp32_peak else None
            wait = r.get("update_wait_fraction")
            if wait is None and r.get("update_wait_s") is not None and r.get("step_seconds"):
                wait = r["update_wait_s"] / r["step_seconds"]
            md.append(f"| {r['executor']} | {r['stash'] or ''} | {r['micro_batch_size']} | {r['micro_batches']} | {r['batch']} | "
                      + (f"{r['tokens_per_second']:.0f} | {fmt(mfu, 3)} | {r['device_peak_bytes'] / 2**20:.1f} | {r['copy_wait_fraction']:.3f} | {fmt(wait, 3)} | |" if ok
                         else f" | | | | | {r['error'][:120]} |"))
        ran = [r for r in results if r["error"] is None]
        conv = {(r["micro_batch_size"], r["micro_batches"]): r["tokens_per_second"] for r in ran if r["executor"] == "conventional"}
        md += ["", "Relay ÷ conventional, tokens/s:", ""]
        for stash in ("device", "host"):
            relay = [r for r in ran if r["stash"] == stash]
            equal = [f"M={r['micro_batch_size']} U={r['micro_batches']}: {r['tokens_per_second'] / conv[(r['micro_batch_size'], r['micro_batches'])]:.2f}"
                     for r in relay if (r["micro_batch_size"], r["micro_batches"]) in conv]
            md.append(f"- {stash} stash, equal batch: " + ("; ".join(equal) if equal else "n/a"))
            if relay and conv:
                best_relay = max(relay, key=lambda r: (r["batch"], r["tokens_per_second"]))
                best_conv = max((r for r in ran if r["executor"] == "conventional"), key=lambda r: (r["batch"], r["tokens_per_second"]))
                md.append(f"- {stash} stash, each at its largest batch that ran: relay {best_relay['batch']} ({best_relay['tokens_per_second']:.0f} tok/s) ÷ "
                          f"conventional {best_conv['batch']} ({best_conv['tokens_per_second']:.0f} tok/s) = {best_relay['tokens_per_second'] / best_conv['tokens_per_second']:.2f}")
        peers = [t for t in torch_runs if t["model"] == rep["model"] and t["seq"] == rep["seq"]]
        if peers:
            md += ["", "Ours ÷ PyTorch at PyTorch's batch (our best configuration with that batch):", ""]
            for t in peers:
                ours = [r for r in ran if r["batch"] == t["batch"]]
                best = max(ours, key=lambda r: r["tokens_per_second"]) if ours else None
                peak = bf16_peak if t["dtype"] == "bf16" else fp32_peak
                tmfu = t["tokens_per_s"] * flops / peak if peak else None
                md.append(f"- PyTorch {t['dtype']} batch {t['batch']}: {t['tokens_per_s']:.0f} tok/s (MFU {fmt(tmfu, 3)}); "
                          + (f"ours {best['executor']} {best['stash'] or ''} {best['tokens_per_second']:.0f} tok/s, ratio {best['tokens_per_second'] / t['tokens_per_s']:.2f}" if best
                             else "no configuration of ours ran at that batch"))
        md.append("")
    if not glob.glob(f"{out}/train-*.json"):
        md += ["Not measured.", ""]
    if not torch_runs:
        md += ["PyTorch: not measured (see the steps table).", ""]

    # Host optimizer.
    md += ["## Host optimizer (host-optimizer.json)", ""]
    host = load(f"{out}/host-optimizer.json")
    if host:
        md += [f"{host['params']} parameters, {host['threads']} threads, STREAM triad {host['triad_bytes_per_s'] / 1e9:.1f} GB/s.", "",
               "| optimizer | gradients | GB/s | ÷ triad |", "|---|---|---|---|"]
        md += [f"| {r['optimizer']} | {r['grad_dtype']} | {r['bytes_per_s'] / 1e9:.1f} | {r['ratio']:.2f} |" for r in host["results"]]
    else:
        md.append("Not measured.")
    md.append("")

    with open(f"{out}/summary.md", "w") as f:
        f.write("\n".join(md))


if __name__ == "__main__":
    main()
