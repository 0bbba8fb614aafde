"""Build the network, its parameters and its tokenizer for a run.

Three sources of weights:

* `tiny`: a gm.nn.Transformer whose architecture is defined here, once, from the shapes in
  `gemma_ft_widgets.models.TINY`, with the packaged 512-piece tokenizer and the packaged
  pretrained weights (data/tiny_base.npz, written by scripts/pretrain_tiny.py).
  `tiny-random` is the same network randomly initialised from the run's seed.
* a named Gemma 2/3/4 model: weights through `kagglehub.model_download(<versioned handle>)`,
  loaded with `gm.ckpts.load_params` (which detects the NESTED / FLAT / STACKED / KAULDRON
  layouts), tokenizer = the `tokenizer.model` of the same download. A populated
  `$KAGGLEHUB_CACHE` works with no network; a missing one fails fast with `ModelLoadError`.
* a local checkpoint directory (an export of this package, a kagglehub download folder, or
  any gemma orbax checkpoint with a tokenizer.model beside or above it). Its architecture is
  read from `gemma_ft_model.json` when an export wrote one, else inferred from the shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from importlib import resources
from typing import Any

import jax
import jax.numpy as jnp

from .. import models as model_table

# The file an export writes beside its checkpoint so a later run knows the architecture.
MODEL_INFO_NAME = "gemma_ft_model.json"
TOKENIZER_NAME = "tokenizer.model"
_ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "checkpoint")


class ModelLoadError(RuntimeError):
    """The weights or tokenizer cannot be found or read. The message says what to do."""


@dataclasses.dataclass
class LoadedModel:
    """A base network with its params and tokenizer, and where they came from."""

    spec: model_table.ModelSpec
    model: Any  # the base flax module (no LoRA)
    params: Any  # nested params of `model`
    tokenizer: Any  # gm.text tokenizer
    tokenizer_path: str
    source: str  # where the weights came from, for logs and the export info
    dtype: Any


# -- tiny -------------------------------------------------------------------------------------

def tiny_tokenizer_path() -> str:
    """The sentencepiece model packaged for the tiny test model."""
    return str(resources.files("gemma_ft_widgets") / "data" / "tiny_tokenizer.model")


def packaged_weights_path(spec: model_table.ModelSpec) -> str:
    """The packaged base weights of a model shipped with the package (the tiny one)."""
    return str(resources.files("gemma_ft_widgets") / "data" / spec.base_weights)


def save_npz_params(path: str, params) -> None:
    """Write params as a flat .npz ('layer_0/attn/q_einsum/w' -> array): numpy's own format,
    readable without pickle (so loading runs no code) and with nothing but numpy."""
    import numpy as np
    from flax import traverse_util

    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    with open(path, "wb") as f:
        np.savez_compressed(f, **{k: np.asarray(v) for k, v in flat.items()})


def load_npz_params(path: str, model, dtype):
    """The params of `model` from a .npz written by save_npz_params; every name and shape must
    match the network (ModelLoadError says which do not)."""
    import numpy as np
    from flax import traverse_util

    want = traverse_util.flatten_dict(jax.eval_shape(lambda: init_params_shape(model)), sep="/")
    try:
        with np.load(path, allow_pickle=False) as f:
            got = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read the weights file {path}: {e}") from e
    problems = sorted(set(want) ^ set(got)) + [
        f"{k}: {got[k].shape} != {want[k].shape}" for k in set(want) & set(got) if got[k].shape != want[k].shape]
    if problems:
        raise ModelLoadError(f"{path} does not match the network: {', '.join(problems[:5])}")
    return traverse_util.unflatten_dict({k: jnp.asarray(v, dtype) for k, v in got.items()}, sep="/")


def tiny_config(spec: model_table.ModelSpec | None = None):
    """The tiny model's TransformerConfig: Gemma 3 layout (qk-norm, post norms, one local
    sliding and one global attention layer), shapes from the model table."""
    from gemma import gm

    spec = spec or model_table.get_model("tiny")
    pattern = (gm.nn.AttentionType.LOCAL_SLIDING, gm.nn.AttentionType.GLOBAL)
    return gm.nn.config.TransformerConfig(
        num_embed=spec.vocab_size,
        embed_dim=spec.embed_dim,
        hidden_dim=spec.hidden_dim,
        num_heads=spec.num_heads,
        head_dim=spec.head_dim,
        num_kv_heads=spec.num_kv_heads,
        final_logit_softcap=None,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        use_qk_norm=True,
        attention_types=gm.nn.config.make_attention_layers_types(pattern, num_layers=spec.num_layers),
        sliding_window_size=32,
        transpose_gating_einsum=True,
        local_base_frequency=10_000,
        global_base_frequency=1_000_000,
        vision_encoder=None,
    )


# -- architecture -------------------------------------------------------------------------------

def resolve_dtype(name: str = "auto"):
    """bf16 on an accelerator, f32 on a CPU, unless the config names one."""
    if name == "float32":
        return jnp.float32
    if name == "bfloat16":
        return jnp.bfloat16
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16


def build_network(spec: model_table.ModelSpec, dtype=jnp.float32):
    """The base flax module for a table entry (text only: vision/audio encoders left out)."""
    from gemma import gm

    if spec.gm_class is None:
        return gm.nn.Transformer(config=tiny_config(spec), dtype=dtype)
    cls = getattr(gm.nn, spec.gm_class, None)
    if cls is None:
        raise ModelLoadError(
            f"model {spec.name!r} needs gm.nn.{spec.gm_class}, which the installed gemma library "
            "does not have; upgrade gemma (see pyproject.toml for the pinned version)")
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {"dtype": dtype}
    if "text_only" in fields:
        kwargs["text_only"] = True
    model = cls(**kwargs)
    replace = dict(spec.config_overrides)
    if getattr(model.config, "vision_encoder", None) is not None:
        replace["vision_encoder"] = None
    if replace:
        model = cls(**kwargs, config=dataclasses.replace(model.config, **replace))
    return model


def tokenizer_class(family: str):
    """The gm.text tokenizer class of a model family (for gemma4, one that reads and writes our turn
    markers as Gemma 4's own turn tokens)."""
    from gemma import gm

    # Looked up by name: gemma 3.3 (Python 3.11) has no Gemma4Tokenizer attribute at all.
    name = {"tiny": "Gemma3Tokenizer", "gemma2": "Gemma2Tokenizer",
            "gemma3": "Gemma3Tokenizer", "gemma4": "Gemma4Tokenizer"}[family]
    cls = getattr(gm.text, name)
    return _gemma4_turns(cls) if family == "gemma4" else cls


@functools.cache
def _gemma4_turns(base: type) -> type:
    """Gemma 4's tokenizer, reading and writing the turn markers every example is rendered with
    (datasets.START/END) as Gemma 4's own turn tokens (datasets.for_family)."""
    from .. import datasets

    def encode(self, text, **kwargs):
        if isinstance(text, str):
            text = datasets.for_family(text, "gemma4")
        else:
            text = [datasets.for_family(t, "gemma4") for t in text]
        return base.encode(self, text, **kwargs)

    def decode(self, ids):
        return datasets.from_family(base.decode(self, ids), "gemma4")

    return type(f"TurnMapped{base.__name__}", (base,), {"encode": encode, "decode": decode,
                                                       "__module__": __name__})


def make_tokenizer(family: str, path: str):
    """The family's tokenizer on the sentencepiece file `path`, read now; ModelLoadError when it is
    missing or unreadable."""
    if not os.path.isfile(path):
        raise ModelLoadError(f"tokenizer file not found: {path}")
    tok = tokenizer_class(family)(path=path)
    try:
        tok.encode("x")  # loads the sentencepiece model now, not in the middle of training
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ModelLoadError(f"cannot read tokenizer {path}: {e}") from e
    return tok


def init_params(model, seed: int, seq_len: int = 8):
    """Random parameters of `model` (the tiny model's weights), deterministic in `seed`."""
    tokens = jnp.ones((1, seq_len), jnp.int32)
    return jax.jit(lambda key: model.init(key, tokens)["params"])(jax.random.key(seed))


def param_count(tree) -> int:
    """The number of values in a tree of arrays."""
    return int(sum(x.size for x in jax.tree.leaves(tree)))


# -- kagglehub ------------------------------------------------------------------------------

def kaggle_cache_root() -> str:
    """kagglehub's cache root: $KAGGLEHUB_CACHE, else ~/.cache/kagglehub."""
    try:
        from kagglehub.config import get_cache_folder

        return os.path.expanduser(get_cache_folder())
    except Exception:  # noqa: BLE001 - kagglehub internals moved: use its documented default
        return os.path.expanduser(os.environ.get("KAGGLEHUB_CACHE", "~/.cache/kagglehub"))


def _split_handle(handle: str) -> tuple[list[str], str | None]:
    parts = handle.strip("/").split("/")
    if len(parts) == 5:
        return parts[:4], parts[4]
    if len(parts) == 4:
        return parts, None
    raise ModelLoadError(f"not a kagglehub model handle (owner/model/framework/variation[/version]): {handle!r}")


def cached_model_dir(handle: str) -> str | None:
    """The cached download of `handle` if kagglehub marked it complete, else None.

    An unversioned handle falls back to the newest complete cached version (kagglehub itself
    would ask the network for the newest version, even with a populated cache).
    """
    base, version = _split_handle(handle)
    folder = os.path.join(kaggle_cache_root(), "models", *base)
    if version is None:
        try:
            versions = sorted((int(n) for n in os.listdir(folder) if n.isdigit()), reverse=True)
        except FileNotFoundError:
            return None
        for v in versions:
            if os.path.exists(os.path.join(folder, f"{v}.complete")):
                return os.path.join(folder, str(v))
        return None
    path = os.path.join(folder, version)
    if os.path.isdir(path) and os.path.exists(os.path.join(folder, f"{version}.complete")):
        return path
    return None


def kaggle_download(handle: str) -> str:
    """Local folder of a Kaggle model version: the cache first, then the network."""
    cached = cached_model_dir(handle)
    if cached:
        return cached
    base, version = _split_handle(handle)
    where = os.path.join(kaggle_cache_root(), "models", *base, version or "<version>")
    try:
        import kagglehub

        return kagglehub.model_download(handle)
    except Exception as e:  # noqa: BLE001 - network, auth, license: all need the same advice
        raise ModelLoadError(
            f"cannot get the weights of Kaggle model {handle!r}: not in the kagglehub cache "
            f"(looked in {where}, with marker {where}.complete) and the download failed: "
            f"{type(e).__name__}: {str(e)[:300]}\n"
            "To fix: (1) log in to Kaggle — run `kagglehub.login()` in a notebook, or set "
            "KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in ~/.kaggle/ — and accept the "
            "Gemma license on the model's Kaggle page; or (2) populate the cache on a machine "
            f"with network (`kagglehub.model_download({handle!r})`) and copy it here, pointing "
            "KAGGLEHUB_CACHE at its root; or (3) pass a local checkpoint directory as the model."
        ) from e


def find_checkpoint_dir(root: str) -> str:
    """The orbax checkpoint inside a download / export folder (itself, or one level down)."""
    def is_ckpt(p):
        return os.path.isdir(p) and any(os.path.exists(os.path.join(p, m)) for m in _ORBAX_MARKERS)

    if is_ckpt(root):
        return root
    subdirs = sorted(os.path.join(root, n) for n in os.listdir(root) if not n.startswith("."))
    found = [d for d in subdirs if is_ckpt(d)]
    if not found:  # e.g. <version>/<variation>/<step>/
        found = [s for d in subdirs if os.path.isdir(d)
                 for s in sorted(os.path.join(d, n) for n in os.listdir(d)) if is_ckpt(s)]
    if not found:
        raise ModelLoadError(f"no orbax checkpoint found in {root} (looked for {', '.join(_ORBAX_MARKERS)})")
    if len(found) > 1:
        raise ModelLoadError(f"several checkpoints in {root}: {', '.join(found)}; pass one of them")
    return found[0]


def find_tokenizer(ckpt_dir: str, stop_at: str | None = None) -> str:
    """tokenizer.model in the checkpoint folder or a parent (up to `stop_at`)."""
    d = os.path.abspath(ckpt_dir)
    stop = os.path.abspath(stop_at) if stop_at else None
    for _ in range(3):
        p = os.path.join(d, TOKENIZER_NAME)
        if os.path.isfile(p):
            return p
        if stop and d == stop:
            break
        d = os.path.dirname(d)
    raise ModelLoadError(f"no {TOKENIZER_NAME} found beside or above {ckpt_dir}")


def checkpoint_shapes(ckpt_dir: str) -> dict[str, tuple]:
    """Flat 'a/b/c' -> shape of a checkpoint's arrays, from orbax metadata (reads no arrays)."""
    from orbax import checkpoint as ocp

    ckpt = ocp.StandardCheckpointer()
    meta = ckpt.metadata(ckpt_dir)
    if meta.item_metadata is None and os.path.exists(os.path.join(ckpt_dir, "default")):
        meta = ckpt.metadata(os.path.join(ckpt_dir, "default"))
    tree = meta.item_metadata.tree if hasattr(meta.item_metadata, "tree") else meta.item_metadata
    out = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif hasattr(node, "shape"):
            out[prefix] = tuple(node.shape)

    walk("", dict(tree))
    return out


def infer_spec(ckpt_dir: str) -> model_table.ModelSpec:
    """The table entry whose shapes match a checkpoint (vocab, width, depth)."""
    info_path = os.path.join(ckpt_dir, MODEL_INFO_NAME)
    if os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as f:
            base = json.load(f).get("architecture")
        if base in model_table.MODELS:
            return model_table.MODELS[base]
    shapes = checkpoint_shapes(ckpt_dir)
    emb = next((s for k, s in shapes.items() if k.endswith("input_embedding")), None)
    layers = {k.split("layer_")[1].split("/")[0] for k in shapes if "layer_" in k}
    if emb is None:
        raise ModelLoadError(f"{ckpt_dir}: no embedding table in the checkpoint; not a Gemma checkpoint?")
    for spec in model_table.MODELS.values():
        if (spec.vocab_size, spec.embed_dim) == tuple(emb) and spec.num_layers == len(layers):
            return spec
    raise ModelLoadError(
        f"{ckpt_dir}: no known Gemma architecture has vocab {emb[0]}, width {emb[1]} and "
        f"{len(layers)} layers; write {MODEL_INFO_NAME} with {{\"architecture\": <model name>}} beside it")


def load_checkpoint_params(ckpt_dir: str, model, dtype, param_sharding=None):
    """Load a gemma checkpoint (any layout) as the nested params of `model`.

    The target tree (shapes of `model`, our dtype, and the shardings `param_sharding` gives,
    e.g. FSDP) goes to `gm.ckpts.load_params(params=...)`, so orbax restores each array
    directly in its final dtype and place: a model that only fits sharded is never
    materialised whole on one device. (`load_params(sharding=...)` is broken in gemma 4.0.1:
    it wraps the tree before applying the shardings.)
    """
    from gemma import gm

    abstract = jax.eval_shape(lambda: init_params_shape(model))
    if param_sharding is not None:
        shardings = param_sharding(abstract)
    else:
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: one, abstract)
    target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, dtype, sharding=sh), abstract, shardings)
    try:
        params = gm.ckpts.load_params(ckpt_dir, params=target)
    except Exception as e:  # noqa: BLE001 - orbax/gemma raise many types for a mismatched tree
        raise ModelLoadError(
            f"cannot load the checkpoint in {ckpt_dir} as {type(model).__name__} "
            f"({param_count(abstract):,} params): {type(e).__name__}: {str(e)[:500]}") from e
    return jax.tree.map(lambda x: x.astype(dtype) if x.dtype != dtype else x, params)


def init_params_shape(model):
    """Initialise `model` on a dummy batch and return its params (used under jax.eval_shape for the tree's shapes)."""
    return model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"]


# -- entry point ----------------------------------------------------------------------------

def load_model(model: str, seed: int = 0, dtype_name: str = "auto", spec: model_table.ModelSpec | None = None,
               param_sharding=None) -> LoadedModel:
    """Build the base model, its params and tokenizer for a config's `model` field.

    `spec` overrides the table lookup (tests point a tiny architecture at a Kaggle handle).
    `param_sharding` is a function abstract-params -> shardings (FSDP), applied at load time.
    """
    dtype = resolve_dtype(dtype_name)
    if spec is None and model in model_table.MODELS:
        spec = model_table.MODELS[model]
    if spec is not None and spec.kaggle_handle is None:  # tiny: packaged base or random init
        net = build_network(spec, dtype)
        if spec.base_weights:
            weights = packaged_weights_path(spec)
            params, source = load_npz_params(weights, net, dtype), f"packaged base {spec.base_weights}"
        else:
            params, source = init_params(net, seed), f"random init (seed {seed})"
        if param_sharding is not None:
            params = jax.device_put(params, param_sharding(params))
        path = tiny_tokenizer_path()
        return LoadedModel(spec, net, params, make_tokenizer(spec.family, path), path, source, dtype)
    if spec is not None:
        root = kaggle_download(spec.kaggle_handle)
        ckpt_dir = find_checkpoint_dir(root)
        tok_path = find_tokenizer(ckpt_dir, stop_at=root)
        source = f"kaggle:{spec.kaggle_handle}"
    else:
        root = os.path.abspath(os.path.expanduser(model))
        if not os.path.isdir(root):
            raise ModelLoadError(f"model {model!r} is neither a known model name nor a directory")
        ckpt_dir = find_checkpoint_dir(root)
        spec = infer_spec(ckpt_dir)
        tok_path = find_tokenizer(ckpt_dir)
        source = ckpt_dir
    net = build_network(spec, dtype)
    tokenizer = make_tokenizer(spec.family, tok_path)
    params = load_checkpoint_params(ckpt_dir, net, dtype, param_sharding)
    return LoadedModel(spec, net, params, tokenizer, tok_path, source, dtype)
