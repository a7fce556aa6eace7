"""The checkpoint side of import-hf / export-hf, on one tiny Bamba checkpoint: every bad input named (file, field or
tensor) with nothing half-loaded, dtypes, the CLI, and the padding row's training semantics."""
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

import hybridc  # noqa: E402
from hybridc.cli import main  # noqa: E402
from hybridc.hf.checkpoint import read_header, write_safetensors  # noqa: E402

V = 100


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cfg = tf.BambaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, attn_layer_indices=[1], mamba_d_state=8,
                         mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_conv=4, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=48, tie_word_embeddings=False, pad_token_id=3)
    torch.manual_seed(0)
    hf = tf.BambaForCausalLM(cfg).eval()
    d = tmp_path_factory.mktemp("bamba")
    hf.save_pretrained(d)
    return d, hf


def copy(ckpt, tmp_path, edit_config=None):
    d = tmp_path / "ck"
    shutil.copytree(ckpt[0], d)
    if edit_config:
        c = json.loads((d / "config.json").read_text())
        edit_config(c)
        (d / "config.json").write_text(json.dumps(c, indent=2))
    return d


def rewrite_tensors(d, edit):
    """Apply `edit(dict of numpy arrays)` to model.safetensors."""
    from safetensors.numpy import load_file

    arrays = dict(load_file(str(d / "model.safetensors")))
    edit(arrays)
    write_safetensors(arrays, d / "model.safetensors", metadata={"format": "pt"})


def params_of(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def unchanged(before, net):
    return all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# -- config fields -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, field, words", [
    (lambda c: c.update(model_type="mamba9"), "model_type", "no importer"),
    (lambda c: c.update(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}), "rope_parameters",
     "yarn"),
    (lambda c: c.update(hidden_act="gelu_fast"), "hidden_act", "activation"),
    (lambda c: c.update(attention_dropout=0.1), "attention_dropout", "dropout"),
    (lambda c: c.update(some_new_option=3), "some_new_option", "does not know this field"),
    (lambda c: c.update(mamba_n_heads=3), "mamba_n_heads", "mamba_expand"),
    (lambda c: c.update(architectures=["LlamaForCausalLM"]), "architectures", "BambaForCausalLM"),
])
def test_config_field_errors_name_file_field_value(ckpt, tmp_path, capsys, edit, field, words):
    d = copy(ckpt, tmp_path, edit)
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.import_hf(d)
    msg = str(e.value)
    assert "config.json:" in msg and repr(field) in msg and words in msg, msg
    assert "^" in msg  # the caret under the field in config.json
    assert main(["import-hf", str(d)]) == 1
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_config_json_alone_imports(ckpt, tmp_path):
    text = hybridc.import_hf(ckpt[0] / "config.json")
    assert text == hybridc.import_hf(ckpt[0])
    assert "pad_token 3" in text


# -- tensors ---------------------------------------------------------------------------------------------------------

def bad_load(d, name_in_message, file_in_message=True):
    m = hybridc.load_hf(d)
    net = hybridc.build(m)
    before = params_of(net)
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.load_hf_weights(net, d)
    msg = str(e.value)
    assert name_in_message in msg, msg
    if file_in_message:
        assert str(d) in msg, msg
    assert unchanged(before, net), "a failed load changed the model"
    return msg


def test_missing_tensor(ckpt, tmp_path):
    d = copy(ckpt, tmp_path)
    rewrite_tensors(d, lambda a: a.pop("model.layers.0.mamba.D"))
    assert "missing tensor model.layers.0.mamba.D" in bad_load(d, "model.layers.0.mamba.D")


def test_unexpected_tensor(ckpt, tmp_path):
    d = copy(ckpt, tmp_path)
    rewrite_tensors(d, lambda a: a.update({"model.layers.0.mamba.extra": np.zeros(3, np.float32)}))
    assert "unexpected tensor model.layers.0.mamba.extra" in bad_load(d, "model.layers.0.mamba.extra")


def test_wrong_shape(ckpt, tmp_path):
    d = copy(ckpt, tmp_path)
    rewrite_tensors(d, lambda a: a.update({"model.layers.1.self_attn.q_proj.weight": np.zeros((32, 16), np.float32)}))
    msg = bad_load(d, "model.layers.1.self_attn.q_proj.weight")
    assert "(32, 16)" in msg and "(32, 32)" in msg


def test_truncated_file(ckpt, tmp_path):
    d = copy(ckpt, tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    msg = bad_load(d, "truncated")
    assert "model.safetensors" in msg


def test_corrupt_header(ckpt, tmp_path):
    d = copy(ckpt, tmp_path)
    f = d / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[8:20] = b"#" * 12
    f.write_bytes(bytes(raw))
    bad_load(d, "not JSON")


def test_missing_shard(ckpt, tmp_path):
    d = tmp_path / "sharded"
    ckpt[1].save_pretrained(d, max_shard_size="20KB")
    shards = sorted(d.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()
    msg = bad_load(d, shards[1].name)
    assert "missing" in msg


def test_sharded_checkpoint_loads_with_progress(ckpt, tmp_path):
    d = tmp_path / "sharded"
    ckpt[1].save_pretrained(d, max_shard_size="20KB")
    net = hybridc.load_hf_weights(hybridc.build(hybridc.load_hf(d)), d, progress=True)
    x = torch.randint(0, V, (1, 7))
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), ckpt[1](input_ids=x).logits.numpy(), rtol=1e-5, atol=1e-5)


# -- dtypes ----------------------------------------------------------------------------------------------------------

def test_bf16_checkpoint_loads_as_bf16_and_fp32_on_request(ckpt, tmp_path):
    m = hybridc.load_hf(ckpt[0])
    net = hybridc.load_hf_weights(hybridc.build(m), ckpt[0])
    d = tmp_path / "bf16"
    hybridc.save_hf(net, m, d, dtype="bf16")
    assert json.loads((d / "config.json").read_text())["dtype"] == "bfloat16"
    assert {e.dtype for e in read_header(d / "model.safetensors").values()} == {"BF16"}
    half = hybridc.load_hf_weights(hybridc.build(m), d)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    # bf16 values are exactly the rounded fp32 weights
    want = net.layers[0].mixer.in_proj.weight.detach().to(torch.bfloat16)
    assert torch.equal(half.layers[0].mixer.in_proj.weight.detach(), want)
    full = hybridc.load_hf_weights(hybridc.build(m), d, dtype="fp32")
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    back = tf.AutoModelForCausalLM.from_pretrained(d)
    assert back.model.embed_tokens.weight.dtype == torch.bfloat16
    jnet = hybridc.build(m, backend="jax")
    params = hybridc.load_hf_weights(jnet, d)
    assert str(params["embed.weight"].dtype) == "bfloat16"


# -- the CLI ---------------------------------------------------------------------------------------------------------

def test_cli_import_and_export_round_trip(ckpt, tmp_path, capsys):
    hyb, w, out = tmp_path / "m.hyb", tmp_path / "w.safetensors", tmp_path / "out"
    assert main(["import-hf", str(ckpt[0]), "-o", str(hyb), "--weights", str(w)]) == 0
    assert hyb.read_text() == hybridc.import_hf(ckpt[0])
    net = hybridc.load_weights(hybridc.build(hybridc.load_file(hyb)), w)
    x = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        want = ckpt[1](input_ids=x).logits.numpy()
        np.testing.assert_allclose(net(x).numpy(), want, rtol=1e-5, atol=1e-5)
    assert main(["export-hf", str(hyb), "--weights", str(w), "-o", str(out)]) == 0
    back = tf.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        np.testing.assert_allclose(back(input_ids=x).logits.numpy(), want, rtol=1e-5, atol=1e-5)
    assert main(["import-hf", str(out)]) == 0
    assert capsys.readouterr().out == hyb.read_text()


def test_export_of_a_model_no_family_expresses(tmp_path):
    m = hybridc.load("layers rwkv attn; dim 32; vocab 50; output logits; rwkv head_dim=16")
    net = hybridc.build(m)
    with pytest.raises(hybridc.HybridcError) as e:
        hybridc.save_hf(net, m, tmp_path / "x")
    msg = str(e.value)
    assert "no transformers family expresses this model" in msg and "rwkv" in msg, msg
    assert not (tmp_path / "x").exists()


def test_export_usage_errors(tmp_path, capsys):
    hyb = tmp_path / "m.hyb"
    hyb.write_text("layers mamba2; dim 32; vocab 50; output logits")
    assert main(["export-hf", str(hyb), "--weights", str(tmp_path / "none.safetensors"), "-o", str(tmp_path)]) == 2
    assert main(["import-hf", str(tmp_path / "missing")]) == 2


# -- training semantics ------------------------------------------------------------------------------------------------

def test_padding_row_gets_no_gradient_like_transformers(ckpt):
    hf = ckpt[1]
    net = hybridc.load_hf_weights(hybridc.build(hybridc.load_hf(ckpt[0])), ckpt[0]).train()
    x = torch.tensor([[5, 3, 3, 7, 3, 9]])
    for model, emb in ((hf, hf.model.embed_tokens.weight), (net, net.embed.weight)):
        model.zero_grad()
        out = model(input_ids=x).logits if model is hf else model(x)
        out.square().mean().backward()
        assert torch.count_nonzero(emb.grad[3]) == 0
        assert torch.count_nonzero(emb.grad[5]) > 0
    np.testing.assert_allclose(net.embed.weight.grad.numpy(), hf.model.embed_tokens.weight.grad.numpy(),
                               rtol=1e-4, atol=1e-6)
