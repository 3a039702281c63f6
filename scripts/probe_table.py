#!/usr/bin/env python3
"""The markdown table of scripts/probe_ablations.sh: one line per row, test accuracy per probe
as mean +- sample sd over the seeds run (with their number), from each run's summary.json."""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/probe_ablations")
probes = [p.name for p in sorted(out.iterdir()) if p.is_dir()]
rows = []
for probe in probes:
    for row in sorted((out / probe).iterdir()):
        if row.is_dir() and row.name not in rows:
            rows.append(row.name)
print("| row | overrides | " + " | ".join(f"{p} (test accuracy)" for p in probes) + " |")
print("|---|---|" + "---|" * len(probes))
for row in rows:
    cells, overrides = [], ""
    for probe in probes:
        folder = out / probe / row
        if (folder / "overrides.txt").exists():
            overrides = (folder / "overrides.txt").read_text().strip()
        accuracies = [json.loads(s.read_text())["test_accuracy"] for s in sorted(folder.glob("*/summary.json"))]
        if not accuracies:
            cells.append("")
        elif len(accuracies) == 1:
            cells.append(f"{accuracies[0]:.3f} (1)")
        else:
            cells.append(f"{statistics.mean(accuracies):.3f} ± {statistics.stdev(accuracies):.3f} ({len(accuracies)})")
    print(f"| {row} | `{overrides}` | " + " | ".join(cells) + " |")
