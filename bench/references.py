"""Reference extraction over the labelled corpus: precision, recall, texts per second.

    .venv/bin/python -m bench.references [--corpus tests/data/references.jsonl] [--show-misses]

Counts per message: a number found and labelled is a true positive, found but not labelled a
false positive, labelled but not found a false negative (each distinct number once). Targets:
precision ≥ 0.995, recall ≥ 0.97. Also times the extractor on adversarial 10,000-character
inputs (long runs of connectors, dots, words), which must stay linear.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from integrations.references import ReferenceRules, extract_references

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "references.jsonl"
ADVERSARIAL = {
    "spaces": "ticket" + " " * 10_000 + "x",
    "connectors": "ticket" + " - : # nr is" * 900 + "x",
    "dots": "a." * 5_000,
    "numbers": "ticket " + "1234 en " * 1_200,
    "handle-like": "a.b+c-" * 1_600 + "@x",
}


def score(rows: list[dict[str, Any]]) -> tuple[Counter[str], list[dict[str, Any]]]:
    counts: Counter[str] = Counter()
    misses = []
    for row in rows:
        rules = ReferenceRules(helpdesk=row["helpdesk"])
        found = {r.number for r in extract_references(row["text"], rules, row.get("urls") or ())}
        expected = set(row["refs"])
        counts["tp"] += len(found & expected)
        counts["fp"] += len(found - expected)
        counts["fn"] += len(expected - found)
        if found != expected:
            misses.append({"id": row["id"], "text": row["text"], "expected": sorted(expected),
                           "found": sorted(found), "note": row.get("note", "")})
    return counts, misses


def throughput(rows: list[dict[str, Any]], seconds: float = 2.0) -> float:
    texts = [(r["text"], ReferenceRules(helpdesk=r["helpdesk"]), r.get("urls") or ())
             for r in rows]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for text, rules, urls in texts:
            extract_references(text, rules, urls)
        done += len(texts)
    return done / (time.perf_counter() - start)


def worst_adversarial_ms() -> float:
    worst = 0.0
    for text in ADVERSARIAL.values():
        start = time.perf_counter()
        extract_references(text)
        worst = max(worst, (time.perf_counter() - start) * 1000)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description="reference extraction benchmark")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.corpus.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    counts, misses = score(rows)
    precision = counts["tp"] / max(1, counts["tp"] + counts["fp"])
    recall = counts["tp"] / max(1, counts["tp"] + counts["fn"])
    figures = {
        "bench": "references", "messages": len(rows),
        "by_language": dict(Counter(r["lang"] for r in rows)),
        "tp": counts["tp"], "fp": counts["fp"], "fn": counts["fn"],
        "precision": round(precision, 4), "recall": round(recall, 4),
        "texts_per_s": round(throughput(rows)), "worst_adversarial_ms": round(
            worst_adversarial_ms(), 2),
    }
    if args.show_misses:
        for miss in misses:
            print(json.dumps(miss, ensure_ascii=False))
    print(f"{len(rows)} messages: precision {precision:.4f} (target ≥ 0.995), recall "
          f"{recall:.4f} (target ≥ 0.97); {figures['texts_per_s']} texts/s; worst adversarial "
          f"input {figures['worst_adversarial_ms']} ms")
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
