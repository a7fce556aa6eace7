"""MAD's selective copying, compression and memorization tasks.

Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures" (arXiv:2403.17844); reference generators
in athms/mad-lab `mad/data/instances.py` (`generate_selective_copying_instance`, `generate_compression_instance`,
`generate_memorization_instance`, `generate_kv_map`), published defaults in
`configs/tasks/{selective-copying,compression,memorization}.yml`. Same semantics, our own code.
"""
from __future__ import annotations

from .base import IGNORE, Task, uniform_ints


class SelectiveCopying(Task):
    """Copy the non-blank tokens, in order, after a copy token.

    Tokens: data [0, vocab - 2), blank vocab - 2, copy vocab - 1. Layout (length seq_len, n = num_tokens_to_copy):
    n data tokens with seq_len - 2n - 1 blanks scattered among them, the copy token, then n blanks. Labels: the
    data tokens in order at the last n positions. As in MAD (`np.insert` at indices drawn from [0, n)), each blank
    goes before a uniformly chosen data token, so the last data token always sits right before the copy token.
    """

    name = "selective_copying"
    defaults = {"vocab": 16, "seq_len": 256, "num_tokens_to_copy": 16}
    source = "MAD (Poli et al. 2024), athms/mad-lab configs/tasks/selective-copying.yml"

    def _setup(self) -> None:
        o = self.options
        V, L, n = o["vocab"], o["seq_len"], o["num_tokens_to_copy"]
        self.need(n >= 1, f"num_tokens_to_copy must be at least 1, got {n}")
        self.need(L > 2 * n + 1, f"seq_len {L} is too short to copy {n} tokens",
                  f"needs seq_len > 2 * num_tokens_to_copy + 1 = {2 * n + 1}")
        self.need(V >= 3, f"vocab must be at least 3 (data, blank, copy), got {V}")
        self.vocab, self.seq_len = V, L

    def batch(self, rng, size: int):
        import numpy as np

        o = self.options
        V, L, n = o["vocab"], o["seq_len"], o["num_tokens_to_copy"]
        data = uniform_ints(rng, 0, V - 2, (size, n))  # (B, n)
        before = rng.integers(0, n, (size, L - 2 * n - 1))  # (B, blanks): the data token each blank precedes
        counts = (before[:, :, None] == np.arange(n)).sum(axis=1)  # (B, n)
        where = np.arange(n) + np.cumsum(counts, axis=1)  # (B, n) positions of the data tokens
        inputs = np.full((size, L), V - 2, dtype=np.int64)
        inputs[np.arange(size)[:, None], where] = data
        inputs[:, L - n - 1] = V - 1
        labels = np.full((size, L), IGNORE, dtype=np.int64)
        labels[:, L - n:] = data
        return inputs, labels


class Compression(Task):
    """Reproduce a random sequence after it has been read to its end, as next-token prediction.

    MAD's compression is an encoder task: an autoencoder reads seq_len - 1 random tokens from [0, vocab - 1) and a
    compression token (vocab - 1), pools the last position into one vector and decodes all seq_len tokens from it.
    In next-token form we append seq_len more compression tokens and score the reconstruction there:
    inputs = x_1 .. x_n C C .. C (n = seq_len - 1 data tokens, seq_len copies of C), labels -100 on the first n
    positions, then x_1 .. x_n C (the prediction at the j-th C is token j of the original). Arrays are
    2 * seq_len - 1 long. Unlike MAD's pooled bottleneck, an attention layer can look back at the data here; for a
    recurrent layer everything must pass through its state at the first C, as through MAD's pooled vector.
    """

    name = "compression"
    defaults = {"vocab": 16, "seq_len": 32}
    source = "MAD (Poli et al. 2024), athms/mad-lab configs/tasks/compression.yml"

    def _setup(self) -> None:
        o = self.options
        self.need(o["vocab"] >= 2, f"vocab must be at least 2 (data, compression token), got {o['vocab']}")
        self.need(o["seq_len"] >= 2, f"seq_len must be at least 2, got {o['seq_len']}")
        self.vocab, self.seq_len = o["vocab"], 2 * o["seq_len"] - 1

    def batch(self, rng, size: int):
        import numpy as np

        V, L = self.options["vocab"], self.options["seq_len"]
        n = L - 1
        data = uniform_ints(rng, 0, V - 1, (size, n))  # (B, n)
        inputs = np.concatenate([data, np.full((size, L), V - 1, dtype=np.int64)], axis=1)  # (B, 2L-1)
        labels = np.concatenate([np.full((size, n), IGNORE, dtype=np.int64), data,
                                 np.full((size, 1), V - 1, dtype=np.int64)], axis=1)  # (B, 2L-1)
        return inputs, labels


def memorization_table(vocab: int, seed: int):
    """The fixed key -> value map MAD memorizes: keys [0, S/2) mapped one to one into values [S/2, S), S = vocab - 1.

    Drawn from its own generator seeded with `seed` (MAD's `kv_map_seed`/config seed, 12345), so it is the same in
    every batch and every run.
    """
    import numpy as np

    S = vocab - 1
    nk = S // 2
    gen = np.random.default_rng(seed)
    return (nk + gen.permutation(S - nk)[:nk]).astype(np.int64)  # (nk,) table[k] = value of key k


class Memorization(Task):
    """Recall values of a fixed key-value map that is never shown in context (it must live in the weights).

    Tokens: keys [0, S/2), values [S/2, S), insert token vocab - 1, S = vocab - 1. Layout: seq_len / 2 blocks
    `k insert`, labels `-100 v` with v = table[k] (the prediction after the insert token is the key's value).
    """

    name = "memorization"
    defaults = {"vocab": 256, "seq_len": 32, "kv_map_seed": 12345}
    source = "MAD (Poli et al. 2024), athms/mad-lab configs/tasks/memorization.yml"

    def _setup(self) -> None:
        o = self.options
        self.need(o["vocab"] >= 3, f"vocab must be at least 3 (key, value, insert token), got {o['vocab']}")
        L = o["seq_len"]
        self.need(L >= 2 and L % 2 == 0, f"seq_len must be even and at least 2, got {L}")
        self.vocab, self.seq_len = o["vocab"], o["seq_len"]
        self._table = None

    @property
    def table(self):
        if self._table is None:
            self._table = memorization_table(self.options["vocab"], self.options["kv_map_seed"])
        return self._table

    def batch(self, rng, size: int):
        import numpy as np

        V, L = self.options["vocab"], self.options["seq_len"]
        keys = uniform_ints(rng, 0, len(self.table), (size, L // 2))  # (B, L/2)
        inputs = np.stack([keys, np.full_like(keys, V - 1)], axis=2).reshape(size, L)
        labels = np.stack([np.full_like(keys, IGNORE), self.table[keys]], axis=2).reshape(size, L)
        return inputs, labels
