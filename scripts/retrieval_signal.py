#!/usr/bin/env python3
"""Does the retrieval task carry a signal that a simple rule can read, and does that signal need
the order of the bytes? For each pair of passages and each profile (byte n-grams, n-grams hashed
into `bins` bins for n > 1, or words; square-root counts, unit norm):
- threshold: the cosine similarity of the two profiles, a threshold chosen on the training pairs;
- learned: logistic regression on the pair's features (p1 * p2, |p1 - p2|), its L2 weight chosen
  on the validation pairs (a linear read-out of the bag of n-grams: what a model that sees no
  position can learn from unigrams, and what one that can form n-grams could learn beyond it).
Accuracy on the test pairs (chance 0.5). docs/RESULTS.md, "Retrieval: what lets a model leave
chance" and "Retrieval: what the order of the bytes adds".
    /usr/bin/python3 scripts/retrieval_signal.py [DATA_DIR] [--bins B]  (default data/retrieval, 4096)"""
import argparse
import json
import re
import struct
import sys
import zlib

import numpy as np
import torch


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


def unit_sqrt_counts(ids, bins):
    counts = np.sqrt(np.bincount(ids % bins, minlength=bins).astype(np.float64))
    return counts / (np.linalg.norm(counts) + 1e-12)


def byte_profile(tokens, n, bins):
    grams = tokens[:len(tokens) - n + 1].copy()
    for i in range(1, n):
        grams = grams * 257 + tokens[i:len(tokens) - n + 1 + i]
    return unit_sqrt_counts(grams, bins)


def word_profile(tokens, bins):
    """Lower-cased runs of letters, each hashed by CRC-32 (the same in every run)."""
    words = re.findall(rb"[a-z]+", bytes(tokens.astype(np.uint8)).lower())
    return unit_sqrt_counts(np.array([zlib.crc32(w) for w in words] or [0], dtype=np.int64), bins)


def profiles(sequences, kind, bins):
    """(2E, bins) for the sequences of E pairs."""
    make = (lambda s: word_profile(s, bins)) if kind == "words" else (lambda s: byte_profile(s, kind, bins))
    return np.stack([make(s) for s in sequences])


def threshold_rule(train, test):
    """Test accuracy of the best training threshold on the two profiles' cosine similarity."""
    (y_train, p_train), (y_test, p_test) = train, test
    s_train = (p_train[0::2] * p_train[1::2]).sum(1)
    s_test = (p_test[0::2] * p_test[1::2]).sum(1)
    thresholds = np.quantile(s_train, np.linspace(0.01, 0.99, 99))
    best = max(thresholds, key=lambda t: ((s_train > t) == y_train).mean())
    return ((s_test > best) == y_test).mean()


def pair_features(p):
    a, b = torch.from_numpy(p[0::2]), torch.from_numpy(p[1::2])
    return torch.cat([a * b, (a - b).abs()], 1)


def learned_rule(train, valid, test, weights=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)):
    """Logistic regression on pair features: (the L2 weight chosen on validation, {split: accuracy})."""
    splits = {"train": train, "valid": valid, "test": test}
    x = {name: pair_features(p) for name, (_, p) in splits.items()}
    mean, sd = x["train"].mean(0), x["train"].std(0) + 1e-6
    x = {name: (v - mean) / sd for name, v in x.items()}
    y = {name: torch.from_numpy(labels.astype(np.float64)) for name, (labels, _) in splits.items()}
    best = None
    for weight in weights:
        w = torch.zeros(x["train"].shape[1] + 1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

        def loss():
            optimizer.zero_grad()
            logits = x["train"] @ w[1:] + w[0]
            value = torch.nn.functional.binary_cross_entropy_with_logits(logits, y["train"]) + weight * w[1:].square().sum()
            value.backward()
            return value

        optimizer.step(loss)
        with torch.no_grad():
            accuracy = {name: (((x[name] @ w[1:] + w[0]) > 0).double() == y[name]).double().mean().item() for name in x}
        if best is None or accuracy["valid"] > best[1]["valid"]:
            best = (weight, accuracy)
    return best


def main():
    parser = argparse.ArgumentParser(description="Which rules read the retrieval task's signal.")
    parser.add_argument("root", nargs="?", default="data/retrieval", help="the dataset folder")
    parser.add_argument("--bins", type=int, default=4096, help="hash bins of the n-gram and word profiles")
    args = parser.parse_args()
    splits = {name: load(f"{args.root}/{name}.bin") for name in ("train", "valid", "test")}
    print("profile | threshold rule, test | learned rule: L2 weight, train, validation, test")
    for kind in (1, 2, 3, "words"):
        bins = 256 if kind == 1 else args.bins
        data = {name: (labels, profiles(sequences, kind, bins)) for name, (labels, sequences) in splits.items()}
        weight, accuracy = learned_rule(data["train"], data["valid"], data["test"])
        name = "words" if kind == "words" else f"byte {kind}-grams"
        print(f"{name}, {bins} bins | {threshold_rule(data['train'], data['test']):.3f} | {weight:g}, "
              f"{accuracy['train']:.3f}, {accuracy['valid']:.3f}, {accuracy['test']:.3f}", flush=True)


if __name__ == "__main__":
    main()
