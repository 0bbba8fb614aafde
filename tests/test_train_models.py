"""Model loading: the table vs the library, kagglehub cache offline, failing fast, local dirs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time

import jax  # required: a missing jax is a broken install and must fail, not skip
import numpy as np
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets import models as table
from gemma_ft_widgets.config import sample_dataset_path
from gemma_ft_widgets.train import loop, models

HANDLE = "google/gemma-3/flax/gemma3-tiny-test/1"


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in table.MODELS if not n.endswith("-it")])
def test_table_param_counts_match_the_installed_gemma(name):
    """jax.eval_shape of the network the trainer builds (text only) allocates nothing."""
    spec = table.MODELS[name]
    net = models.build_network(spec, jax.numpy.bfloat16)
    shapes = jax.eval_shape(lambda: models.init_params_shape(net))
    assert shapes["embedder"]["input_embedding"].shape == (spec.vocab_size, spec.embed_dim)
    assert len([k for k in shapes if k.startswith("layer_")]) == spec.num_layers
    assert models.param_count(shapes) == spec.params, (
        f"models.py says {spec.params:,} params for {name}; the installed gemma builds "
        f"{models.param_count(shapes):,} (text only)")


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to resolve or connect fails at once, like a machine with no network."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write_kaggle_cache(root: str, handle: str = HANDLE, seed: int = 7):
    """Lay out a kagglehub cache entry like the official Gemma Flax releases: tokenizer.model and
    an orbax checkpoint in the FLAT layout (`transformer/layer_0/attn/q_einsum`-style keys) in
    <version>/<variation>/, and the completion marker <version>.complete beside <version>/."""
    from gemma.gm.ckpts import _checkpoint
    from orbax import checkpoint as ocp

    owner, model, framework, variation, version = handle.split("/")
    base = os.path.join(root, "models", owner, model, framework, variation)
    version_dir = os.path.join(base, version)
    os.makedirs(version_dir)
    tiny = models.load_model("tiny", seed=seed)
    flat = _checkpoint._nested_to_flat(tiny.params)
    assert all(k.startswith("transformer/") for k in flat)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.path.join(version_dir, variation), flat)
    ckpt.wait_until_finished()
    shutil.copyfile(models.tiny_tokenizer_path(), os.path.join(version_dir, "tokenizer.model"))
    open(os.path.join(base, f"{version}.complete"), "w").close()
    return tiny.params, version_dir


def test_kagglehub_cache_loads_offline(tmp_path, monkeypatch, no_network):
    cache = str(tmp_path / "kh")
    monkeypatch.setenv("KAGGLEHUB_CACHE", cache)
    want, version_dir = write_kaggle_cache(cache)
    spec = dataclasses.replace(table.TINY, name="tiny-on-kaggle", kaggle_handle=HANDLE)

    t = time.time()
    loaded = models.load_model("tiny-on-kaggle", spec=spec)
    assert time.time() - t < 60
    assert loaded.source == f"kaggle:{HANDLE}"
    assert loaded.tokenizer_path == os.path.join(version_dir, "tokenizer.model")
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), loaded.params, want)
    assert jax.tree.all(same)

    # kagglehub itself agrees the entry is complete and serves it with no network.
    import kagglehub

    assert os.path.realpath(kagglehub.model_download(HANDLE)) == os.path.realpath(version_dir)
    # An unversioned handle would ask the network; we fall back to the newest cached version.
    assert models.cached_model_dir(HANDLE.rsplit("/", 1)[0]) == version_dir

    # The download folder also works as a local checkpoint directory (architecture inferred).
    local = models.load_model(version_dir)
    assert local.spec.name == "tiny" and jax.tree.all(
        jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), local.params, want))


def test_uncached_weights_fail_fast_with_instructions(tmp_path, monkeypatch, no_network):
    cache = str(tmp_path / "empty")
    monkeypatch.setenv("KAGGLEHUB_CACHE", cache)
    t = time.time()
    with pytest.raises(models.ModelLoadError) as e:
        models.load_model("gemma3-1b")
    assert time.time() - t < 30
    msg = str(e.value)
    handle = table.MODELS["gemma3-1b"].kaggle_handle
    assert handle in msg
    assert os.path.join(cache, "models", *handle.split("/")) in msg
    assert "kagglehub.login()" in msg and "KAGGLE_USERNAME" in msg and "KAGGLEHUB_CACHE" in msg

    # An incomplete download (no marker) is not trusted either.
    os.makedirs(os.path.join(cache, "models", *handle.split("/")))
    with pytest.raises(models.ModelLoadError):
        models.load_model("gemma3-1b")


def test_trainer_exits_2_when_weights_are_missing(tmp_path, monkeypatch, capsys, no_network):
    import signal

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / contract.CONFIG_NAME).write_text(json.dumps(
        {"model": "gemma3-1b", "dataset": sample_dataset_path(), "max_steps": 50}))
    try:
        assert loop.run(str(run_dir)) == contract.EXIT_CONFIG_ERROR
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    err = capsys.readouterr().err
    assert "google/gemma-3/flax/gemma3-1b/1" in err and "kagglehub.login()" in err


def test_checkpoint_dir_with_unknown_shapes_is_refused(tmp_path):
    from orbax import checkpoint as ocp

    ckpt = ocp.StandardCheckpointer()
    ckpt.save(str(tmp_path / "ck"), {"embedder": {"input_embedding": np.zeros((7, 3), np.float32)}})
    ckpt.wait_until_finished()
    shutil.copyfile(models.tiny_tokenizer_path(), tmp_path / "ck" / "tokenizer.model")
    with pytest.raises(models.ModelLoadError, match="no known Gemma architecture"):
        models.load_model(str(tmp_path / "ck"))


def test_dtype_is_f32_on_cpu_unless_asked():
    assert models.resolve_dtype("auto") == jax.numpy.float32  # these tests run on a CPU
    assert models.resolve_dtype("bfloat16") == jax.numpy.bfloat16
    loaded = models.load_model("tiny", dtype_name="bfloat16")
    assert {x.dtype for x in jax.tree.leaves(loaded.params)} == {jax.numpy.dtype("bfloat16")}


def test_tiny_loads_the_packaged_base_and_tiny_random_the_seeded_init(tmp_path):
    """`tiny` is the pretrained base shipped in the package (the same arrays whatever the seed);
    `tiny-random` is the same network, randomly initialised from the seed."""
    path = models.packaged_weights_path(table.TINY)
    with np.load(path, allow_pickle=False) as f:
        stored = {k: f[k] for k in f.files}
    a, b = models.load_model("tiny", seed=0), models.load_model("tiny", seed=5)
    assert a.source == "packaged base tiny_base.npz" and models.param_count(a.params) == table.TINY.params
    from flax import traverse_util

    flat = traverse_util.flatten_dict(a.params, sep="/")
    assert set(flat) == set(stored) and all(np.array_equal(flat[k], stored[k]) for k in stored)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a.params, b.params))

    r0, r1 = models.load_model("tiny-random", seed=0), models.load_model("tiny-random", seed=1)
    assert r0.source == "random init (seed 0)" and r0.tokenizer_path == a.tokenizer_path
    differ = lambda p, q: not np.array_equal(p["embedder"]["input_embedding"], q["embedder"]["input_embedding"])  # noqa: E731
    assert differ(r0.params, r1.params) and differ(r0.params, a.params)
    with open(os.path.splitext(path)[0] + ".json", encoding="utf-8") as f:
        record = json.load(f)  # how the base was made: scripts/pretrain_tiny.py writes it
    assert record["made_by"] == "scripts/pretrain_tiny.py" and record["config"]["model"] == "tiny-random"


def test_a_weights_file_that_does_not_fit_the_network_is_refused(tmp_path):
    net = models.build_network(table.TINY)
    good = models.load_npz_params(models.packaged_weights_path(table.TINY), net, jax.numpy.float32)
    models.save_npz_params(str(tmp_path / "same.npz"), good)  # round trip
    again = models.load_npz_params(str(tmp_path / "same.npz"), net, jax.numpy.float32)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), good, again))

    wrong = dict(good, embedder={"input_embedding": np.zeros((512, 32), np.float32)})
    models.save_npz_params(str(tmp_path / "wrong.npz"), wrong)
    with pytest.raises(models.ModelLoadError, match=r"embedder/input_embedding: \(512, 32\) != \(512, 64\)"):
        models.load_npz_params(str(tmp_path / "wrong.npz"), net, jax.numpy.float32)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(models.ModelLoadError, match="cannot read the weights file"):
        models.load_npz_params(str(tmp_path / "junk.npz"), net, jax.numpy.float32)
