"""MAD's three recall tasks: in-context recall, noisy recall, fuzzy recall.

Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures" (arXiv:2403.17844); reference generators
in athms/mad-lab `mad/data/instances.py` (`generate_in_context_recall_instance`,
`generate_noisy_in_context_recall_instance`, `generate_fuzzy_in_context_recall_instance`), published defaults in
`configs/tasks/{in-context-recall,noisy-in-context-recall,fuzzy-in-context-recall}.yml` and `mad/configs.py`
(`multi_query: True`, no noise unless the config sets it). Same semantics, our own code.

How our batches relate to MAD's: MAD keeps two target sets, all next tokens for its training split and only the
recalled values for its test split; we return the test-split targets (the recalled values), so the loss and the
accuracy score the same positions. Fuzzy recall draws key motif sizes 1..k_motif_size as MAD's training split does
(its test split always uses the largest size).
"""
from __future__ import annotations

from .base import IGNORE, Task, uniform_ints


class InContextRecall(Task):
    """Key-value pairs drawn from a small vocabulary, each key keeping one value for the whole sequence.

    Tokens (multi_query): keys [0, S/2), values [S/2, S), noise [S, S + noise_vocab_size), S = vocab - noise_vocab_size
    (without multi_query one more token, vocab - 1, is the copy prefix and S shrinks by one). The sequence holds
    seq_len/2 - 1 pairs (each one, except a guaranteed kv pair, is two noise tokens with probability frac_noise),
    then a final probe `k v` of a key already shown. Labels (after MAD's shift, inputs = seq[:-1], labels = seq[1:]):
    the value at the position of its key whenever the key was shown before (multi_query), and the probe's value.
    Arrays are seq_len - 1 long (seq_len with the copy prefix).
    """

    name = "in_context_recall"
    defaults = {"vocab": 16, "seq_len": 128, "multi_query": True, "noise_vocab_size": 0, "frac_noise": 0.0}
    source = "MAD (Poli et al. 2024), athms/mad-lab configs/tasks/in-context-recall.yml"

    def _setup(self) -> None:
        o = self.options
        L, nv, f = o["seq_len"], o["noise_vocab_size"], o["frac_noise"]
        self.need(L >= 4 and L % 2 == 0, f"seq_len must be even and at least 4, got {L}")
        self.need(0 <= f < 1, f"frac_noise must be in [0, 1), got {f}")
        self.need(nv >= 0, f"noise_vocab_size must be >= 0, got {nv}")
        self.need(f == 0 or nv > 0, "frac_noise > 0 needs noise_vocab_size > 0")
        self.symbols = o["vocab"] - (0 if o["multi_query"] else 1) - nv
        self.need(self.symbols >= 2, f"vocab {o['vocab']} leaves {self.symbols} key/value tokens",
                  f"needs vocab >= {2 + nv + (0 if o['multi_query'] else 1)} (keys, values, noise, copy prefix)")
        self.vocab, self.seq_len = o["vocab"], L - (1 if o["multi_query"] else 0)

    def batch(self, rng, size: int):
        import numpy as np

        o = self.options
        S, P, mq = self.symbols, o["seq_len"] // 2 - 1, o["multi_query"]
        nk, rows = S // 2, np.arange(size)
        keys = uniform_ints(rng, 0, nk, (size, P))  # (B, P)
        fresh_values = uniform_ints(rng, nk, S, (size, P))  # (B, P) value of a key at its first showing
        noisy = rng.random((size, P)) < o["frac_noise"]  # (B, P)
        noisy[rows, rng.integers(0, P, size)] = False  # at least one kv pair (MAD's not_noise_idx)
        noise = uniform_ints(rng, S, S + max(o["noise_vocab_size"], 1), (size, P, 2))  # (B, P, 2)
        table = np.full((size, nk), -1, dtype=np.int64)  # (B, nk) value of each key, -1 before it is shown
        seq = np.empty((size, P, 2), dtype=np.int64)
        lab = np.full((size, P, 2), IGNORE, dtype=np.int64)
        for i in range(P):
            k, nz = keys[:, i], noisy[:, i]
            seen = table[rows, k] >= 0
            new = ~seen & ~nz
            table[rows[new], k[new]] = fresh_values[new, i]
            v = table[rows, k]
            seq[:, i, 0] = np.where(nz, noise[:, i, 0], k)
            seq[:, i, 1] = np.where(nz, noise[:, i, 1], v)
            if mq:
                lab[:, i, 1] = np.where(seen & ~nz, v, IGNORE)
        shown = np.where(table >= 0, rng.random((size, nk)), -1.0)  # (B, nk)
        k_probe = shown.argmax(axis=1)  # uniform over the keys shown
        v_probe = table[rows, k_probe]
        tail = [k_probe, v_probe] if mq else [np.full(size, o["vocab"] - 1), k_probe, v_probe]
        seq = np.concatenate([seq.reshape(size, 2 * P), np.stack(tail, axis=1)], axis=1)
        tail_lab = [np.full(size, IGNORE)] * (len(tail) - 1) + [v_probe]
        lab = np.concatenate([lab.reshape(size, 2 * P), np.stack(tail_lab, axis=1)], axis=1)
        return seq[:, :-1], lab[:, 1:]


class NoisyRecall(InContextRecall):
    """In-context recall with two-token noise blocks from their own vocabulary (MAD's noisy-in-context-recall)."""

    name = "noisy_recall"
    defaults = {"vocab": 32, "seq_len": 128, "multi_query": True, "noise_vocab_size": 16, "frac_noise": 0.2}
    source = "MAD (Poli et al. 2024), athms/mad-lab configs/tasks/noisy-in-context-recall.yml"


class FuzzyRecall(Task):
    """Recall where keys and values are motifs of 1..k_motif_size / 1..v_motif_size distinct tokens.

    Tokens (multi_query): keys [0, S/2), values [S/2, S), S = vocab - 1 - noise_vocab_size; vocab - 1 pads on
    the left (without multi_query: vocab - 2 pads, vocab - 1 is the copy prefix). A probe pair is placed at a
    random point, pairs are added up to seq_len - |probe| - (k_motif_size + v_motif_size) tokens, and the probe
    closes the sequence. Labels: a value's tokens at the positions before them whenever its key was shown before
    (multi_query), and the probe's value. MAD can end a sequence before placing the probe pair (then the final
    answer is not in the context); we place it at the last step instead. Arrays are seq_len long.
    """

    name = "fuzzy_recall"
    defaults = {"vocab": 16, "seq_len": 128, "k_motif_size": 3, "v_motif_size": 3, "multi_query": True,
                "noise_vocab_size": 0, "frac_noise": 0.0}
    source = "MAD (Poli et al. 2024), athms/mad-lab configs/tasks/fuzzy-in-context-recall.yml"

    def _setup(self) -> None:
        o = self.options
        L, K, W, nv, f = o["seq_len"], o["k_motif_size"], o["v_motif_size"], o["noise_vocab_size"], o["frac_noise"]
        self.need(K >= 1 and W >= 1, f"motif sizes must be at least 1, got k={K}, v={W}")
        self.need(0 <= f < 1, f"frac_noise must be in [0, 1), got {f}")
        self.need(nv >= 0 and (f == 0 or nv > 0), "frac_noise > 0 needs noise_vocab_size > 0")
        self.symbols = o["vocab"] - (1 if o["multi_query"] else 2) - nv
        nk = self.symbols // 2
        self.need(nk >= K and self.symbols - nk >= W,
                  f"vocab {o['vocab']} is too small for motifs of {K} distinct key and {W} distinct value tokens",
                  f"needs vocab >= {2 * max(K, W) + nv + (1 if o['multi_query'] else 2)}")
        self.need(L >= 3 * (K + W), f"seq_len {L} is too short for motifs of {K}+{W} tokens",
                  f"needs seq_len >= 3 * (k_motif_size + v_motif_size) = {3 * (K + W)}")
        self.vocab, self.seq_len = o["vocab"], L

    def batch(self, rng, size: int):
        import numpy as np

        pairs = [self._one(rng) for _ in range(size)]
        return (np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64))

    def _one(self, rng):
        o = self.options
        L, K, W, mq = o["seq_len"], o["k_motif_size"], o["v_motif_size"], o["multi_query"]
        S = self.symbols
        nk = S // 2

        def key(n):
            return tuple(int(t) for t in rng.permutation(nk)[:n])

        def value(n):
            return tuple(int(t) + nk for t in rng.permutation(S - nk)[:n])

        k_probe, v_probe = key(int(rng.integers(1, K + 1))), value(int(rng.integers(1, W + 1)))
        size_probe = len(k_probe) + len(v_probe)
        probe_at = int(rng.integers(0, L - 2 * size_probe))
        limit = L - size_probe - (K + W)
        seq, lab, values, placed = [], [], {}, False
        while len(seq) < limit:
            if not placed and (len(seq) >= probe_at or len(seq) + K + W >= limit):
                seq += k_probe + v_probe
                lab += [IGNORE] * size_probe
                values[k_probe], placed = v_probe, True
                continue
            k_size, v_size = int(rng.integers(1, K + 1)), int(rng.integers(1, W + 1))
            if o["frac_noise"] > 0 and rng.random() < o["frac_noise"]:
                seq += [int(t) for t in rng.integers(S, S + o["noise_vocab_size"], k_size + v_size)]
                lab += [IGNORE] * (k_size + v_size)
                continue
            k = key(k_size)
            if k == k_probe:
                v, placed = v_probe, True
            else:
                v = values.get(k) or value(v_size)
            seen = k in values
            seq += list(k) + list(v)
            lab += [IGNORE] * k_size + (list(v) if seen and mq else [IGNORE] * len(v))
            values[k] = v
        seq += ([] if mq else [o["vocab"] - 1]) + list(k_probe) + list(v_probe)
        lab += ([] if mq else [IGNORE]) + [IGNORE] * len(k_probe) + list(v_probe)
        pad = L + 1 - len(seq)
        seq = [o["vocab"] - (1 if mq else 2)] * pad + seq
        lab = [IGNORE] * pad + lab
        return seq[:-1], lab[1:]
