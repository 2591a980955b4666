"""Peak memory of `tulu-lite data convert` on generated Alpaca-style JSON arrays: bounded, not growing with size.

Each measurement runs in a fresh subprocess that reports its own peak RSS (``ru_maxrss``), so runs don't share a
high-water mark. Runs, all in one invocation:

- baseline: the same interpreter importing the converter, converting nothing;
- small / large: converting an N/4-record and an N-record ``alpaca_data.json`` (indented like the real release,
  so the large file has about 6 N lines);
- sampled: the large file with ``--max-examples 10000`` (memory bounded by the sample, not the file);
- gzipped: the large file as ``alpaca_data.json.gz`` (decompressed as it streams: memory as for the large file);
- naive (``--naive``): ``json.load`` of the large file, what reading the release in one go costs.

Targets: large peak RSS under 1 GB, and large/small peak RSS ratio near 1 (memory does not grow with file size).

    python benchmarks/convert_memory.py                # N = 1,000,000 records
    python benchmarks/convert_memory.py -n 200000 --naive
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from tulu_lite.data.sources import ConvertOptions, convert
mode, raw, out = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
written = 0
if mode == "convert":
    written = convert("stanford_alpaca", raw, out, ConvertOptions(seed=42)).written
elif mode == "sampled":
    written = convert("stanford_alpaca", raw, out, ConvertOptions(seed=42, max_examples=10000)).written
elif mode == "naive":
    with open(raw, encoding="utf-8") as handle:
        written = len(json.load(handle))
seconds = time.perf_counter() - start
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": seconds, "written": written}))
"""


def generate(path: Path, n: int) -> None:
    """Write an n-record alpaca_data.json (streamed, indented like the release, a third without input)."""
    with path.open("w", encoding="utf-8") as handle:
        handle.write("[\n")
        for i in range(n):
            record = {"instruction": f"Write a short answer to question number {i} about topic {i % 977}.",
                      "input": "" if i % 3 == 0 else f"Some context for record {i}: " + "lorem ipsum " * (i % 9),
                      "output": f"This is the answer for record {i}. " + "It has several words. " * (1 + i % 11)}
            text = json.dumps(record, indent=4, ensure_ascii=False)
            handle.write("    " + text.replace("\n", "\n    ") + (",\n" if i < n - 1 else "\n"))
        handle.write("]\n")


def measure(mode: str, raw: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(raw), str(out)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="records in the large file")
    parser.add_argument("--naive", action="store_true", help="also measure json.load of the large file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="convert-memory-") as tmp:
        tmp = Path(tmp)
        small, large = tmp / "small" / "alpaca_data.json", tmp / "large" / "alpaca_data.json"
        for path, n in ((small, args.n // 4), (large, args.n)):
            path.parent.mkdir()
            generate(path, n)
        gzipped = tmp / "gzipped" / "alpaca_data.json.gz"
        gzipped.parent.mkdir()
        with large.open("rb") as plain, gzip.open(gzipped, "wb", compresslevel=1) as packed:
            shutil.copyfileobj(plain, packed)
        runs = {"baseline": measure("none", small, tmp / "none.jsonl"),
                "small": measure("convert", small, tmp / "small.jsonl"),
                "large": measure("convert", large, tmp / "large.jsonl"),
                "sampled": measure("sampled", large, tmp / "sampled.jsonl"),
                "gzipped": measure("convert", gzipped, tmp / "gzipped.jsonl")}
        if args.naive:
            runs["naive json.load"] = measure("naive", large, tmp / "naive.jsonl")
        sizes = {"baseline": 0, "small": small.stat().st_size, "large": large.stat().st_size,
                 "sampled": large.stat().st_size, "gzipped": gzipped.stat().st_size,
                 "naive json.load": large.stat().st_size}
        lines = {"small": sum(1 for _ in small.open("rb")), "large": sum(1 for _ in large.open("rb"))}
        report(runs, sizes, lines, args.n)


def report(runs: dict, sizes: dict, lines: dict, n: int) -> None:
    print(f"{'run':<16}{'input MB':>10}{'written':>12}{'seconds':>10}{'peak RSS MB':>13}")
    for name, run in runs.items():
        print(f"{name:<16}{sizes[name] / 2**20:>10.1f}{run['written']:>12,}{run['seconds']:>10.1f}"
              f"{run['peak_rss_mb']:>13.1f}")
    large, small, base = runs["large"]["peak_rss_mb"], runs["small"]["peak_rss_mb"], runs["baseline"]["peak_rss_mb"]
    growth = large / small
    print(f"\nfile lines: small {lines['small']:,}, large {lines['large']:,} ({n:,} records)")
    print(f"peak RSS ratio large/small (4x the input): {growth:.3f}")
    print(f"peak RSS above the import-only baseline: large {large - base:.1f} MB, small {small - base:.1f} MB")
    print(f"throughput (large): {runs['large']['written'] / runs['large']['seconds']:,.0f} records/s")
    print(f"peak RSS gzipped/large: {runs['gzipped']['peak_rss_mb'] / large:.3f}")
    ok = large < 1024 and growth < 1.10 and runs["gzipped"]["peak_rss_mb"] < 1024
    print(f"target (large and gzipped < 1024 MB, ratio large/small < 1.10): {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
