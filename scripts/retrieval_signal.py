#!/usr/bin/env python3
"""Does the retrieval task carry a signal that a simple rule can read? For each pair of passages,
the cosine similarity of their byte n-gram profiles (square-root counts; n-grams hashed into 2^16
bins for n > 1); a threshold chosen on the training pairs; accuracy on the test pairs (chance 0.5).
docs/RESULTS.md, "Retrieval at this budget".
    /usr/bin/python3 scripts/retrieval_signal.py [DATA_DIR]     (default data/retrieval)"""
import json
import struct
import sys

import numpy as np


def load(path):
    """An spe dataset file (SPEDATA, version, header length, JSON header, labels, lengths, tokens)
    -> labels (E,), the token sequences (example-major: the fields of example e are 2e, 2e + 1)."""
    raw = open(path, "rb").read()
    at = raw.index(b"{") - 8
    _, header_length = struct.unpack_from("<II", raw, at)
    header = json.loads(raw[at + 8:at + 8 + header_length])
    if header["fields"] != 2:
        sys.exit(f"{path}: expected pairs (2 fields), got {header['fields']}")
    n, offset = header["examples"], at + 8 + header_length
    labels = np.frombuffer(raw, np.int32, n, offset)
    offset += 4 * n
    lengths = np.frombuffer(raw, np.uint32, 2 * n, offset).astype(np.int64)
    offset += 4 * 2 * n
    tokens = np.frombuffer(raw, np.uint16, int(lengths.sum()), offset).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return labels, [tokens[starts[i]:starts[i + 1]] for i in range(2 * n)]


def profile(tokens, n, bins=1 << 16):
    grams = tokens[:len(tokens) - n + 1].copy()
    for i in range(1, n):
        grams = grams * 257 + tokens[i:len(tokens) - n + 1 + i]
    counts = np.sqrt(np.bincount(grams % bins, minlength=bins).astype(np.float64))
    return counts / (np.linalg.norm(counts) + 1e-12)


def similarities(labels, sequences, n):
    profiles = [profile(s, n) for s in sequences]
    return np.array([profiles[2 * e] @ profiles[2 * e + 1] for e in range(len(labels))])


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "data/retrieval"
    train, test = load(f"{root}/train.bin"), load(f"{root}/test.bin")
    for n in (1, 2, 3):
        s_train, s_test = similarities(*train, n), similarities(*test, n)
        thresholds = np.quantile(s_train, np.linspace(0.01, 0.99, 99))
        best = max(thresholds, key=lambda t: ((s_train > t) == train[0]).mean())
        print(f"byte {n}-grams: train accuracy {((s_train > best) == train[0]).mean():.3f}, "
              f"test accuracy {((s_test > best) == test[0]).mean():.3f}")


if __name__ == "__main__":
    main()
