"""Render the benchmark results (benchmarks/results/*.json) into docs/benchmarks.md and PNG plots in docs/img/.

    python benchmarks/report.py

Run the benchmark scripts first (their commands are listed in the generated page); sections whose JSON is missing
are left out. Every number on the page comes from those files.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
IMG = DOCS / "img"
README = ROOT / "README.md"
README_WKV = ("<!-- wkv table: benchmarks/report.py writes it from benchmarks/results/wkv.json -->", "<!-- /wkv table -->")


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(v) -> str:
    """A summary value: a number, or a list of numbers (one per process)."""
    return ", ".join(f"{x:.2f}" for x in v) if isinstance(v, list) else f"{v:.2f}"


def machine(d: dict) -> str:
    m = d.get("machine", {})
    return (f"Measured on: {m.get('platform', '?')}, {m.get('threads', '?')} threads, torch {m.get('torch', '?')}, "
            f"device {m.get('device', '?')}{', ' + m['gpu'] if m.get('gpu') else ''}.")


def on_gpu(d: dict) -> bool:
    return d.get("machine", {}).get("device") == "cuda"


def wkv_section(d: dict) -> str:
    rows = [[r["backend"], r["T"], r["C"], r["B"], f"{r['forward_ms']:.2f}", f"{r['forward_backward_ms']:.2f}",
             f"{r['forward_GBps']:.2f}"] for r in d["rows"]]
    command = ("python benchmarks/bench_wkv.py --device cuda --repeats 20 --out benchmarks/results/wkv_cuda.json"
               if on_gpu(d) else "python benchmarks/bench_wkv.py")
    out = ["## The WKV operator" + (" on a GPU" if on_gpu(d) else ""), "", "```bash", command, "```", "", machine(d),
           "",
           table(["backend", "T", "C", "B", "forward ms", "forward+backward ms", "forward GB/s"], rows), "",
           f"Memory copy bandwidth on the same machine (`dst.copy_(src)`, read + write counted): "
           f"{d['copy_bandwidth_GBps']:.2f} GB/s"
           + (f"; allocating copy (`src.clone()`, what an out-of-place op pays for its output pages): "
              f"{d['clone_bandwidth_GBps']:.2f} GB/s." if "clone_bandwidth_GBps" in d else "."), ""]
    if d.get("forward_profile"):
        prof = d["forward_profile"]
        most = max(r["threads"] for r in prof)
        short = min((r for r in prof if r["threads"] == most), key=lambda r: r["T"])
        at_copy = 3 * 4 / d["copy_bandwidth_GBps"]  # ns per element to move k, v and y at copy bandwidth
        out += ["Where the compiled forward's time goes (B = 4, C = 192; nanoseconds per element, medians): at the "
                "shortest T the inputs fit in cache, so the time is the kernel's arithmetic; the longest adds the "
                "memory traffic.", "",
                table(["threads", "T", "ns per element"],
                      [[r["threads"], r["T"], f"{r['ns_per_element']:.2f}"] for r in prof]), "",
                f"Moving an element's 12 bytes (read k and v, write y) at copy bandwidth takes {at_copy:.2f} ns, so "
                f"50% of copy bandwidth means {2 * at_copy:.2f} ns per element; the arithmetic alone, in cache on "
                f"{most} threads, takes {short['ns_per_element']:.2f} ns.", ""]
    if d.get("kernel_profile"):
        out += ["Device time of each CUDA kernel per call at the longest T (B = 4, C = 192; torch.profiler, mean of "
                "repeats):", "",
                table(["call", "kernel", "µs per call"],
                      [[r["call"], f"`{r['kernel'].split('(')[0].replace('void ', '')}`", f"{r['us_per_call']:.1f}"]
                       for r in d["kernel_profile"]]), ""]
    if d.get("block_share"):
        out += ["WKV's share of one RWKVViT-T block's forward time (torch.profiler, batch 1, fp32):", "",
                table(["resolution", "tokens", "block ms", "WKV ms", "WKV share"],
                      [[r["res"], r["tokens"], f"{r['block_ms']:.2f}", f"{r['wkv_ms']:.2f}",
                        f"{100 * r['wkv_share']:.1f} %"] for r in d["block_share"]]), ""]
    if d.get("summary"):
        out += ["Summary:", ""] + [f"- `{k}`: {_number(v)}" for k, v in d["summary"].items()] + [""]
        if "time_ratio_T16384_over_T4096_fwd_bwd_fresh_memory" in d["summary"]:
            out += ["The `time_ratio` keys divide the median times of the two lengths, measured interleaved in a "
                    "fresh process; each is the median over processes (`per_process`: each process's value). With "
                    "glibc's defaults (no suffix) the outputs at T = 4096 (12.6 MB each) come from reused heap "
                    "memory and those at T = 16384 (50 MB) are mapped afresh on every call; `reused_memory` and "
                    "`fresh_memory` run both lengths under one allocator setting, all outputs from the heap or all "
                    "freshly mapped (`MEMORY_ENVS` in bench_wkv.py). Comparing the three shows what the "
                    "difference in memory costs.", ""]
    return "\n".join(out)


def wkv_readme_table(d: dict) -> str | None:
    """The README's WKV table: forward and forward+backward ms of each backend at C = 192, and the speedup; None
    when the results hold no compiled backend at C = 192 (a run on a machine without the extension)."""
    at = {(r["backend"], r["T"]): r for r in d["rows"] if r["C"] == 192}
    compiled = next((b for b, _ in at if b != "torch"), None)
    if compiled is None:
        return None
    lengths = sorted(T for b, T in at if b == compiled)
    rows = []
    for T in lengths:
        fast, slow = at[compiled, T], at.get(("torch", T))
        torch_cells = ([f"{slow['forward_ms']:.1f}", f"{slow['forward_backward_ms']:.1f}",
                        f"{slow['forward_backward_ms'] / fast['forward_backward_ms']:.0f}x"] if slow else ["-"] * 3)
        rows.append([T, f"{fast['forward_ms']:.2f}", f"{fast['forward_backward_ms']:.2f}", *torch_cells])
    B, m = d["rows"][0]["B"], d["machine"]
    torch_max = max((T for b, T in at if b == "torch"), default=None)
    skipped = ("the PyTorch path is not timed; " if torch_max is None else
               f"the PyTorch path is timed up to T = {torch_max}; " if torch_max < lengths[-1] else "")
    return "\n".join([
        f"Milliseconds per call at B = {B}, C = 192, fp32, on {m['cpu_count']} CPU cores with {m['threads']} threads "
        f"(`python benchmarks/bench_wkv.py`, medians; {skipped}every shape in [docs/benchmarks.md](docs/benchmarks.md)):",
        "",
        table(["T", f"{compiled} forward", f"{compiled} fwd+bwd", "torch forward", "torch fwd+bwd", "fwd+bwd speedup"],
              rows)])


def readme_with_wkv_table(readme: str, d: dict) -> str:
    """`readme` with the text between the README_WKV markers (once each, in order) replaced by wkv_readme_table(d);
    unchanged when there is no table to write."""
    start, end = README_WKV
    if readme.count(start) != 1 or readme.count(end) != 1 or readme.index(start) > readme.index(end):
        raise ValueError(f"README.md must hold the WKV table markers once each, in this order: {start} ... {end}")
    body = wkv_readme_table(d)
    if body is None:
        return readme
    head, rest = readme.split(start, 1)
    return head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]


def models_section(d: dict) -> str:
    ok = [r for r in d["rows"] if "error" not in r]
    infer = [r for r in ok if r["mode"] == "infer"]
    train = [r for r in ok if r["mode"] == "train"]
    title = "## RWKV versus attention across resolutions" + (" on a GPU" if on_gpu(d) else "")
    out = [title, "", "```bash", f"python benchmarks/{d['command']}", "```", "", machine(d), "",
           "Inference (images/s, median of repeats; peak activation memory in MiB):", "",
           table(["model", "resolution", "batch", "dtype", "images/s", "ms / batch", "peak MiB", "repeats"],
                 [[r["model"], r["res"], r["batch"], r["dtype"], f"{r['images_per_s']:.2f}",
                   f"{r['seconds'] * 1e3:.1f}", f"{r['peak_mem_MiB']:.0f}", r["repeats"]] for r in infer]), ""]
    if train:
        out += ["Training step (forward, backward, AdamW), fp32:", "",
                table(["model", "resolution", "batch", "ms / step", "peak MiB"],
                      [[r["model"], r["res"], r["batch"], f"{r['seconds'] * 1e3:.0f}", f"{r['peak_mem_MiB']:.0f}"]
                       for r in train]), ""]
    pairs = [p for p in d.get("pairs", []) if "error" not in p]
    if pairs:
        out += ["RWKV over attention, both models in one process with their calls alternated (median of per-round "
                "ratios; the targets are read from this table, not from the independent points above):", "",
                table(["resolution", "batch", "dtype", "rwkv ms", "attention ms", "rwkv speed / attention", "rounds"],
                      [[p["res"], p["batch"], p["dtype"], f"{p['rwkv_ms']:.1f}", f"{p['attention_ms']:.1f}",
                        f"{p['speed_ratio']:.2f}x", p["repeats"]] for p in pairs]), ""]
    failed = [r for r in d["rows"] + d.get("pairs", []) if "error" in r]
    if failed:
        out += ["Points that did not complete:", ""] + [
            f"- {r.get('model', 'rwkv / attention pair')} {r.get('mode', 'infer')} {r['res']} px batch {r['batch']} "
            f"{r['dtype']}: {r['error']}" for r in failed]
        out.append("")
    if d.get("summary"):
        out += ["Summary:", ""] + [f"- `{k}`: {_number(v)}" for k, v in d["summary"].items()] + [""]
    plot = plot_models(infer, "model_scaling_cuda.png" if on_gpu(d) else "model_scaling.png")
    if plot:
        out += [f"![images/s against resolution]({plot})", ""]
    return "\n".join(out)


def plot_models(rows: list[dict], filename: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    combos = sorted({(r["batch"], r["dtype"]) for r in rows})
    fig, axes = plt.subplots(1, len(combos), figsize=(4.5 * len(combos), 3.6), squeeze=False)
    for ax, (batch, dtype) in zip(axes[0], combos):
        for model in sorted({r["model"] for r in rows}):
            pts = sorted((r["res"], r["images_per_s"]) for r in rows
                         if r["model"] == model and r["batch"] == batch and r["dtype"] == dtype)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=model)
        ax.set(xscale="log", yscale="log", xlabel="input resolution (px)", ylabel="images / s",
               title=f"batch {batch}, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / filename, dpi=110)
    plt.close(fig)
    return f"img/{filename}"


def poster_section(d: dict) -> str:
    rows = [[r["model"], f"{r['params_m']:.2f}", f"{r['gmacs_112']:.3f}", f"{r['gmacs_224']:.3f}",
             f"{r['images_per_s']:.2f}"] for r in d["rows"]]
    return "\n".join(["## Expression models", "", "```bash", "python benchmarks/bench_poster.py", "```", "",
                      machine(d) + f" Batch {d['input'][0]}, fp32. {d.get('flops_note', '')}", "",
                      table(["model", "params (M)", "GMACs at 112", "GMACs at 224", "images/s"], rows), ""])


def unet_section(d: dict) -> str:
    rows = [[r["model"], f"{r['params_m']:.2f}", f"{r['gmacs']:.1f}", f"{r['fps']:.2f}", f"{r['seconds_min']:.3f}"]
            for r in d["rows"]]
    return "\n".join(["## Depth models at 480x640", "", "```bash", "python benchmarks/bench_unet_depth.py", "```", "",
                      machine(d) + f" Batch 1, fp32. {d.get('flops_note', '')}", "",
                      table(["model", "params (M)", "GMACs", "frames/s (median)", "fastest run (s)"], rows), ""])


def main() -> None:
    parts = ["# Benchmarks", "",
             "Generated by `python benchmarks/report.py` from the JSON files in `benchmarks/results/`; each section "
             "names the command that measured it. CPU timings on a shared 2-core machine are noisy: compare ratios "
             "measured in one run.", ""]
    sections = (("wkv", wkv_section), ("wkv_cuda", wkv_section), ("models", models_section),
                ("models_cuda", models_section), ("poster", poster_section), ("unet_depth", unet_section))
    results = {name: load(name) for name, _ in sections}
    parts += [render(results[name]) for name, render in sections if results[name] is not None]
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.md").write_text("\n".join(parts))
    print(f"wrote {DOCS / 'benchmarks.md'}")
    if results["wkv"] is not None:
        README.write_text(readme_with_wkv_table(README.read_text(), results["wkv"]))
        print(f"wrote the WKV table in {README}")


if __name__ == "__main__":
    main()
