"""Multi-query associative recall (MQAR), as Zoology generates it.

Arora, Eyuboglu et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models"
(arXiv:2312.04927); reference generator `multiquery_ar` in HazyResearch/zoology, `zoology/data/associative_recall.py`
(later `zoology/data/multiquery_ar.py`). Same semantics, our own (vectorised) code.

One example of length L with N pairs and vocabulary V (C = 2N is the context size):

    positions [0, C):   k_1 v_1 k_2 v_2 ... k_N v_N      keys distinct in [1, V/2), values distinct in [V/2, V)
    positions [C, L):   a query region of (L - C) / 2 two-token slots; key k_j is placed at position
                        C + 2 g_j, where the slot indices g_1..g_N are drawn without replacement (successively,
                        g_1 first) from p(i) ∝ a * i^(a-1) over slots i = 1..(L-C)/2 (slot i is index i-1)
    labels:             v_j at the query position C + 2 g_j (the prediction made after reading k_j is v_j);
                        -100 everywhere else
    other positions:    uniform random tokens from [0, V) ("random_non_queries", Zoology's default); 0 if false

Zoology builds an (L+1)-token sequence and shifts (`inputs = seq[:-1]`, `labels = labels[1:]`), which lands each
label on its query key's position, as above. Every key is queried exactly once. Zoology's asserts are kept where
they matter: L even, 4N <= L (so the query region has N slots), N keys and N values available.
"""
from __future__ import annotations

from .base import IGNORE, Task, distinct_ints, uniform_ints


def gap_probabilities(space: int, power_a: float):
    """p(i) ∝ a * i^(a-1) for i = 1..space, normalised: the distribution of a query's slot index (i - 1)."""
    import numpy as np

    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def ordered_sample(rng, p, size: int, count: int):
    """(size, count) indices drawn successively without replacement with probabilities p (Gumbel top-k).

    Sorting log p + Gumbel noise gives exactly the law of successive draws (Plackett-Luce), which is what
    `numpy.random.choice(..., replace=False, p=p)` samples per row in Zoology.
    """
    import numpy as np

    scores = np.log(p)[None, :] + rng.gumbel(size=(size, len(p)))  # (B, space)
    return np.argsort(-scores, axis=1)[:, :count]


class MQAR(Task):
    name = "mqar"
    defaults = {"vocab": 8192, "seq_len": 256, "num_kv_pairs": 16, "power_a": 0.01, "random_non_queries": True}
    source = "Zoology (Arora et al. 2023), HazyResearch/zoology multiquery_ar"

    def _setup(self) -> None:
        o = self.options
        V, L, N, a = o["vocab"], o["seq_len"], o["num_kv_pairs"], o["power_a"]
        self.need(N >= 1, f"num_kv_pairs must be at least 1, got {N}")
        self.need(L >= 4 and L % 2 == 0, f"seq_len must be even and at least 4, got {L}")
        self.need(4 * N <= L, f"seq_len {L} is too short for {N} key-value pairs",
                  f"needs seq_len >= 4 * num_kv_pairs = {4 * N}: {2 * N} context tokens, then {N} query slots of 2")
        self.need(V // 2 - 1 >= N, f"vocab {V} is too small for {N} distinct keys",
                  f"keys come from [1, vocab/2): needs vocab >= {2 * N + 2}")
        self.need(a > 0, f"power_a must be > 0, got {a}")
        self.vocab, self.seq_len = V, L

    def batch(self, rng, size: int):
        import numpy as np

        o = self.options
        V, L, N = o["vocab"], o["seq_len"], o["num_kv_pairs"]
        C, half = 2 * N, V // 2
        keys = distinct_ints(rng, 1, half, size, N)  # (B, N)
        values = distinct_ints(rng, half, V, size, N)  # (B, N)
        gaps = ordered_sample(rng, gap_probabilities((L - C) // 2, o["power_a"]), size, N)  # (B, N)
        if o["random_non_queries"]:
            inputs = uniform_ints(rng, 0, V, (size, L))  # (B, L)
        else:
            inputs = np.zeros((size, L), dtype=np.int64)
        inputs[:, 0:C:2], inputs[:, 1:C:2] = keys, values
        rows = np.arange(size)[:, None]
        where = C + 2 * gaps  # (B, N) query positions
        inputs[rows, where] = keys
        labels = np.full((size, L), IGNORE, dtype=np.int64)
        labels[rows, where] = values
        return inputs, labels
