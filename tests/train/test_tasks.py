"""The training tasks against their definitions: layout, labels, ranges, determinism and sampling statistics."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hybridc.errors import HybridcError
from hybridc.tasks import TASKS, make_task
from hybridc.tasks.mqar import gap_probabilities

ROOT = Path(__file__).resolve().parents[2]
IGNORE = -100


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "input.txt"
    path.write_bytes(bytes(range(256)) * 8 + "héllo wörld\n".encode() * 50)
    return path


def build(name, text_file, **options):
    return make_task(name, path=str(text_file), **options) if name == "text" else make_task(name, **options)


def chi2_limit(df: int, z: float = 3.09) -> float:
    """The chi-square quantile at P = 0.999 (z = 3.09), Wilson-Hilferty approximation."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(counts, probs) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# --- every task -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TASKS))
def test_shapes_ranges_and_determinism(name, text_file):
    task = build(name, text_file)
    x, y = task.batch(np.random.default_rng(7), 6)
    assert x.shape == y.shape == (6, task.seq_len)
    assert x.dtype == y.dtype == np.int64
    assert x.min() >= 0 and x.max() < task.vocab
    scored = y[y != IGNORE]
    assert scored.size and scored.min() >= 0 and scored.max() < task.vocab
    assert ((y != IGNORE).sum(axis=1) > 0).all()
    x2, y2 = task.batch(np.random.default_rng(7), 6)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = task.batch(np.random.default_rng(8), 6)
    assert not np.array_equal(x, x3)
    assert set(task.options) == set(TASKS[name][1])


def test_defaults_are_the_published_ones():
    d = {n: TASKS[n][1] for n in TASKS}
    mqar = d["mqar"]
    assert (mqar["vocab"], mqar["seq_len"], mqar["num_kv_pairs"], mqar["power_a"]) == (8192, 256, 16, 0.01)
    assert (d["in_context_recall"]["vocab"], d["in_context_recall"]["seq_len"]) == (16, 128)
    assert (d["fuzzy_recall"]["k_motif_size"], d["fuzzy_recall"]["v_motif_size"]) == (3, 3)
    noisy = d["noisy_recall"]
    assert (noisy["vocab"], noisy["noise_vocab_size"], noisy["frac_noise"]) == (32, 16, 0.2)
    assert (d["selective_copying"]["seq_len"], d["selective_copying"]["num_tokens_to_copy"]) == (256, 16)
    assert (d["compression"]["vocab"], d["compression"]["seq_len"]) == (16, 32)
    assert (d["memorization"]["vocab"], d["memorization"]["seq_len"]) == (256, 32)


def test_errors_name_the_valid_choices():
    with pytest.raises(HybridcError, match="unknown task 'mqr'") as e:
        make_task("mqr")
    assert "did you mean 'mqar'" in str(e.value) and "selective_copying" in str(e.value)
    with pytest.raises(HybridcError, match="task 'mqar' has no option 'num_kv_pair'") as e:
        make_task("mqar", num_kv_pair=4)
    assert "did you mean 'num_kv_pairs'" in str(e.value) and "power_a" in str(e.value)
    with pytest.raises(HybridcError, match="'seq_len' must be an integer"):
        make_task("mqar", seq_len="long")
    with pytest.raises(HybridcError, match="too short for 16 key-value pairs"):
        make_task("mqar", seq_len=32)
    with pytest.raises(HybridcError, match="too small for 16 distinct keys"):
        make_task("mqar", vocab=32)
    with pytest.raises(HybridcError, match="even"):
        make_task("mqar", seq_len=255)
    with pytest.raises(HybridcError, match="too short to copy"):
        make_task("selective_copying", seq_len=33)
    with pytest.raises(HybridcError, match="noise_vocab_size"):
        make_task("in_context_recall", frac_noise=0.5)
    with pytest.raises(HybridcError, match="needs a file"):
        make_task("text")
    with pytest.raises(HybridcError, match="no such file"):
        make_task("text", path="/nonexistent/input.txt")


def test_none_keeps_the_default_and_strings_are_parsed():
    task = make_task("mqar", vocab=None, seq_len="128", num_kv_pairs=8.0, random_non_queries="false")
    assert task.options == {"vocab": 8192, "seq_len": 128, "num_kv_pairs": 8, "power_a": 0.01,
                            "random_non_queries": False}


def test_numpy_is_imported_lazily():
    code = "import sys, hybridc.tasks; assert 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    describe = [sys.executable, "-X", "importtime", "-m", "hybridc.cli", "describe", "examples/nemotron_h.hyb"]
    out = subprocess.run(describe, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "numpy" not in out.stderr


# --- MQAR (Zoology) -------------------------------------------------------------------------------------------------

def mqar_queries(x, y, n):
    """Per row: (pair index j, query position) for each labelled position, checked against the prefix."""
    out = []
    for b in range(len(x)):
        keys = list(x[b, 0:2 * n:2])
        where = np.flatnonzero(y[b] != IGNORE)
        js = [keys.index(x[b, t]) for t in where]
        assert [y[b, t] for t in where] == [x[b, 2 * j + 1] for j in js]  # the value paired with that key
        out.append((js, where))
    return out


@pytest.mark.parametrize("random_non_queries", [True, False], ids=["random", "zeros"])
def test_mqar_layout_and_labels(random_non_queries):
    V, L, N = 512, 128, 8
    task = make_task("mqar", vocab=V, seq_len=L, num_kv_pairs=N, random_non_queries=random_non_queries)
    x, y = task.batch(np.random.default_rng(0), 200)
    keys, values = x[:, 0:2 * N:2], x[:, 1:2 * N:2]
    assert keys.min() >= 1 and keys.max() < V // 2 and values.min() >= V // 2 and values.max() < V
    assert all(len(set(r)) == N for r in keys) and all(len(set(r)) == N for r in values)
    assert (y[:, :2 * N] == IGNORE).all()
    for js, where in mqar_queries(x, y, N):
        assert sorted(js) == list(range(N))  # every key queried exactly once
        assert ((where - 2 * N) % 2 == 0).all()  # queries sit at the first token of a two-token slot
    others = x[:, 2 * N:][y[:, 2 * N:] == IGNORE]
    if random_non_queries:
        assert abs(others.mean() - (V - 1) / 2) < 0.02 * V
    else:
        assert (others == 0).all()


def test_mqar_first_gap_follows_the_power_law():
    """Key 1's slot index is the first draw: its law is p(i) ∝ a i^(a-1), a = 0.01, over (L - 2N)/2 slots."""
    task = make_task("mqar")  # V=8192, L=256, N=16: 112 slots
    x, y = task.batch(np.random.default_rng(1), 20000)
    first = np.array([where[js.index(0)] for js, where in mqar_queries(x, y, 16)])
    gaps = (first - 32) // 2
    counts = np.bincount(gaps, minlength=112).astype(float)
    assert chi2(counts, gap_probabilities(112, 0.01)) < chi2_limit(111)
    assert chi2(counts, gap_probabilities(112, 0.1)) > chi2_limit(111)  # a wrong exponent fails
    assert chi2(counts, gap_probabilities(112, 1.0)) > 3 * chi2_limit(111)  # uniform fails


def test_mqar_gaps_are_successive_draws_without_replacement():
    """The ordered pair (g1, g2) of a 2-pair example: P = p(g1) p(g2) / (1 - p(g1)), g1 != g2."""
    task = make_task("mqar", vocab=64, seq_len=16, num_kv_pairs=2)  # 6 slots
    x, y = task.batch(np.random.default_rng(2), 30000)
    pairs = np.array([[where[js.index(0)], where[js.index(1)]] for js, where in mqar_queries(x, y, 2)])
    g = (pairs - 4) // 2
    p = gap_probabilities(6, 0.01)
    exact = p[:, None] * p[None, :] / (1 - p[:, None])
    np.fill_diagonal(exact, 0)
    counts = np.zeros((6, 6))
    np.add.at(counts, (g[:, 0], g[:, 1]), 1)
    off = ~np.eye(6, dtype=bool)
    assert counts[~off].sum() == 0
    assert chi2(counts[off], exact[off]) < chi2_limit(29)
    swapped = exact.T[off] / exact.T[off].sum()  # the same law with the draw order reversed: must fail
    assert chi2(counts[off], swapped) > chi2_limit(29)


# --- MAD recall tasks -----------------------------------------------------------------------------------------------

def full_sequence(x, y):
    """The generated sequence before the shift: inputs plus the last label."""
    return np.concatenate([x, y[:, -1:]], axis=1)


@pytest.mark.parametrize("name", ["in_context_recall", "noisy_recall"])
def test_recall_labels_are_earlier_values(name):
    task = make_task(name)
    o = task.options
    S = o["vocab"] - o["noise_vocab_size"]
    x, y = task.batch(np.random.default_rng(3), 300)
    seq = full_sequence(x, y)  # (B, 128): 63 pairs and the probe
    noise_blocks = 0
    for b in range(len(x)):
        pairs, table = seq[b].reshape(-1, 2), {}
        for i, (k, v) in enumerate(pairs):
            if k >= S:  # a noise block: both tokens from the noise vocabulary, nothing scored
                assert S <= v < S + o["noise_vocab_size"] and k < S + o["noise_vocab_size"]
                assert y[b, 2 * i] == IGNORE
                noise_blocks += 1
                continue
            assert k < S // 2 and S // 2 <= v < S
            seen = k in table
            assert table.setdefault(k, v) == v  # a key keeps its value
            last = i == len(pairs) - 1
            assert y[b, 2 * i] == (v if seen else IGNORE)  # the value, predicted at the key's position
            assert seen or not last  # the probe asks for a key shown before
        assert (y[b, 1::2] == IGNORE).all()
    frac = noise_blocks / (300 * 62)
    assert abs(frac - o["frac_noise"]) < 0.02


def test_fuzzy_recall_motifs_and_labels():
    task = make_task("fuzzy_recall")  # keys [0, 7), values [7, 15), pad 15
    x, y = task.batch(np.random.default_rng(4), 200)
    seq = full_sequence(x, y)
    for b in range(len(x)):
        s = list(seq[b])
        start = next(i for i, t in enumerate(s) if t != 15)
        assert set(s[:start]) <= {15} and 15 not in s[start:]
        runs, i = [], start  # maximal runs alternate key, value
        while i < len(s):
            j = i
            while j < len(s) and (s[j] < 7) == (s[i] < 7):
                j += 1
            runs.append((i, tuple(s[i:j])))
            i = j
        assert len(runs) % 2 == 0 and runs[0][1][0] < 7
        table = {}
        for (_, k), (at, v) in zip(runs[0::2], runs[1::2]):
            assert 1 <= len(k) <= 3 and 1 <= len(v) <= 3 and len(set(k)) == len(k) and len(set(v)) == len(v)
            seen = k in table
            assert table.setdefault(k, v) == v
            labels = tuple(y[b, at - 1:at - 1 + len(v)])  # value token t is predicted at position t - 1
            assert labels == (v if seen else (IGNORE,) * len(v))
        assert seen  # the final probe's key was shown before
        assert (y[b, :start] == IGNORE).all()


# --- MAD copying, compression, memorization -------------------------------------------------------------------------

def test_selective_copying_labels_are_the_data_tokens_in_order():
    task = make_task("selective_copying")
    V, L, n = 16, 256, 16
    x, y = task.batch(np.random.default_rng(5), 100)
    for b in range(len(x)):
        head = x[b, :L - n - 1]
        data = head[head != V - 2]
        assert len(data) == n and data.max() < V - 2
        assert np.array_equal(y[b, L - n:], data) and (y[b, :L - n] == IGNORE).all()
        assert x[b, L - n - 1] == V - 1 and (x[b, L - n:] == V - 2).all()
        assert head[-1] != V - 2  # MAD inserts blanks only before data tokens
    before_first = np.argmax(x[:, :L - n - 1] != V - 2, axis=1)  # blanks before data token 1: Binomial(223, 1/16)
    assert abs(before_first.mean() - 223 / n) < 1.5


def test_compression_reconstructs_after_the_compression_token():
    task = make_task("compression")
    x, y = task.batch(np.random.default_rng(6), 50)
    n = 31
    assert task.seq_len == 63 and x[:, :n].max() < 15
    assert (x[:, n:] == 15).all() and (y[:, :n] == IGNORE).all()
    assert np.array_equal(y[:, n:2 * n], x[:, :n]) and (y[:, -1] == 15).all()


def test_memorization_uses_one_fixed_map():
    task = make_task("memorization")
    x, y = task.batch(np.random.default_rng(7), 100)
    x2, y2 = make_task("memorization").batch(np.random.default_rng(99), 100)
    assert (x[:, 1::2] == 255).all() and (y[:, 0::2] == IGNORE).all()
    table = {}
    keys, values = np.concatenate([x[:, 0::2], x2[:, 0::2]]), np.concatenate([y[:, 1::2], y2[:, 1::2]])
    for k, v in zip(keys.ravel(), values.ravel()):
        assert table.setdefault(k, v) == v
    assert all(0 <= k < 127 and 127 <= v < 255 for k, v in table.items())
    assert len(set(table.values())) == len(table)  # one to one
    other = make_task("memorization", kv_map_seed=1).table
    assert not np.array_equal(other, task.table)


# --- text -----------------------------------------------------------------------------------------------------------

def test_text_windows_are_consecutive_bytes(text_file):
    task = make_task("text", path=str(text_file), seq_len=32)
    data = text_file.read_bytes()
    x, y = task.batch(np.random.default_rng(8), 20)
    assert task.vocab == 256 and np.array_equal(x[:, 1:], y[:, :-1])
    for b in range(len(x)):
        assert bytes(np.concatenate([x[b], y[b, -1:]]).astype(np.uint8)) in data
    with pytest.raises(HybridcError, match="fewer than seq_len"):
        make_task("text", path=str(text_file), seq_len=len(data))


@pytest.mark.parametrize("name", ["in_context_recall", "noisy_recall", "fuzzy_recall"])
def test_single_query_recall_scores_only_the_probe(name):
    task = make_task(name, multi_query=False)
    x, y = task.batch(np.random.default_rng(9), 50)
    assert x.shape == (50, task.seq_len) == (50, 128) and x.max() < task.vocab
    scored = y != IGNORE
    last = scored.shape[1] - 1
    first = scored.argmax(axis=1)
    assert scored[:, last].all() and all(scored[b, first[b]:].all() for b in range(50))  # one run, at the end
    if name != "fuzzy_recall":
        assert (scored.sum(axis=1) == 1).all() and (x[:, -2] == task.vocab - 1).all()  # copy prefix, key
