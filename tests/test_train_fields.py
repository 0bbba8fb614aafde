"""The optimizer and LoRA fields of TrainingConfig reach the real trainer's pieces and change
what they compute: accumulation, clipping, weight decay, the schedules, LoRA alpha and dropout.
In-process on the tiny model (a few small jitted steps); one short real run checks the wiring."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gemma_ft_widgets import contract
from gemma_ft_widgets.config import TrainingConfig, sample_dataset_path
from gemma_ft_widgets.train import data, lora, models, optim, step

pytestmark = pytest.mark.slow


def config(**changes) -> TrainingConfig:
    return TrainingConfig.from_dict({"model": "tiny", "dataset": sample_dataset_path(), **changes})


@pytest.fixture(scope="module")
def tiny():
    loaded = models.load_model("tiny", seed=0, dtype_name="float32")
    vocab = loaded.params["embedder"]["input_embedding"].shape[0]
    rng = np.random.default_rng(0)
    toks = rng.integers(3, vocab, size=(8, 17)).astype(np.int32)
    mask = np.ones((8, 16), np.float32)
    mask[::2, :5] = 0  # rows with other token counts: the loss is a mean over tokens, not rows
    batch = {"input": toks[:, :-1], "target": toks[:, 1:], "mask": mask}
    return loaded, batch


def lora_parts(loaded, dropout=0.0, rank=4):
    model = lora.wrap(loaded.model, rank, dropout=dropout)
    adapters = lora.init_lora_params(model, 0)
    # Non-zero B, so the adapters change the output (fresh ones start at B = 0).
    keys = iter(jax.random.split(jax.random.key(1), 1000))
    adapters = jax.tree_util.tree_map_with_path(
        lambda p, x: 0.05 * jax.random.normal(next(keys), x.shape) if p[-1].key == "b" else x, adapters)
    return model, adapters


@pytest.fixture(scope="module")
def plain_eval(tiny):
    """The plain LoRA model's jitted eval step (shared: each compile of the tiny model costs seconds)."""
    loaded, _ = tiny
    model, adapters = lora_parts(loaded)
    return model, adapters, step.make_steps(model, optax.sgd(0.0), True, True)[1]


def test_accumulating_k_micro_batches_equals_one_step_on_the_whole_batch(tiny):
    loaded, batch = tiny
    model, adapters = lora_parts(loaded)
    tx = optax.sgd(1.0)  # the update is minus the gradient: compared directly
    outs = {}
    for k in (1, 4):
        train_step, _ = step.make_steps(model, tx, True, True, accum_steps=k)
        new, _, metrics = train_step(jax.tree.map(jnp.copy, adapters), tx.init(adapters), loaded.params, batch)
        outs[k] = (new, metrics)
    (one, m1), (acc, m4) = outs[1], outs[4]
    assert np.isclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-5)
    assert float(m1["tokens"]) == float(m4["tokens"]) == batch["mask"].sum()
    assert np.isclose(float(m1["grad_norm"]), float(m4["grad_norm"]), rtol=1e-4)
    for a, b, start in zip(jax.tree.leaves(one), jax.tree.leaves(acc), jax.tree.leaves(adapters)):
        assert np.allclose(a - start, b - start, rtol=1e-3, atol=1e-6)
    assert any(float(jnp.abs(a - s).max()) > 0 for a, s in zip(jax.tree.leaves(one), jax.tree.leaves(adapters)))
    # The loop feeds batch_size × grad_accum_steps rows per step.
    rows = np.asarray(step.micro_batches({"row": np.arange(8)}, 4)["row"])
    assert rows.tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]  # each device's rows stay on it


def test_gradient_clipping_changes_the_update_and_0_turns_it_off():
    params = {"w": jnp.ones((3, 3))}
    big, small = {"w": jnp.full((3, 3), 100.0)}, {"w": jnp.full((3, 3), 0.01)}

    def second_update(max_grad_norm):
        tx, _ = optim.for_config(config(max_steps=10, warmup_steps=0, weight_decay=0.0, max_grad_norm=max_grad_norm))
        state = tx.init(params)
        _, state = tx.update(big, state, params)
        upd, _ = tx.update(small, state, params)
        return float(upd["w"][0, 0])

    clipped, loose, off = second_update(0.5), second_update(1e6), second_update(0.0)
    assert not np.isclose(clipped, loose, rtol=1e-3), (clipped, loose)  # Adam's moments saw the clipped step
    assert np.isclose(loose, off, rtol=1e-6)


def test_weight_decay_shrinks_matrices_only():
    params = {"w": jnp.full((2, 2), 2.0), "scale": jnp.full((2,), 2.0)}
    zero = jax.tree.map(jnp.zeros_like, params)
    for wd in (0.0, 0.1):
        tx, sched = optim.for_config(config(max_steps=10, warmup_steps=0, weight_decay=wd))
        upd, _ = tx.update(zero, tx.init(params), params)
        assert np.allclose(upd["w"], -float(sched(0)) * wd * 2.0)
        assert np.allclose(upd["scale"], 0.0)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_each_schedule_warms_up_then_follows_its_shape(kind):
    lr, warm, steps = 1e-3, 4, 20
    _, sched = optim.for_config(config(learning_rate=lr, warmup_steps=warm, max_steps=steps, lr_schedule=kind))
    got = np.array([float(sched(k)) for k in range(steps + 3)])
    assert np.allclose(got[:warm + 1], np.linspace(0, lr, warm + 1), rtol=1e-5)
    want = {"cosine": optax.warmup_cosine_decay_schedule(0.0, lr, warm, steps, lr * 0.1),
            "linear": lambda k: lr - (lr - lr * 0.1) * min(max(k - warm, 0), steps - warm) / (steps - warm),
            "constant": lambda k: lr}[kind]
    assert np.allclose(got[warm:], [float(want(k)) for k in range(warm, steps + 3)], rtol=1e-5)


def test_lora_alpha_scales_the_update_and_old_configs_keep_scale_1(tiny, plain_eval):
    loaded, batch = tiny
    model, adapters, eval1 = plain_eval
    assert lora.scale(config().lora_alpha, config().lora_rank) == 1.0
    assert config(lora_rank=16).lora_alpha == 16.0  # left out: the rank (how runs trained before)
    assert lora.scale(config(lora_rank=8, lora_alpha=32).lora_alpha, 8) == 4.0
    # The train step applies the same scale as sampling/export: eval with scale 3 == scaled adapters.
    _, eval3 = step.make_steps(model, optax.sgd(0.0), True, True, lora_scale=3.0)
    assert np.isclose(float(eval3(adapters, loaded.params, batch)[0]),
                      float(eval1(lora.scaled(adapters, 3.0), loaded.params, batch)[0]), rtol=1e-5)
    assert not np.isclose(float(eval3(adapters, loaded.params, batch)[0]),
                          float(eval1(adapters, loaded.params, batch)[0]), rtol=1e-4)
    # Sampling and export fold in the same scaled adapters (W + s·A·B): the base model then
    # computes what the LoRA model with scale 3 computed.
    merged = lora.merge_into_base(model, loaded.params, lora.scaled(adapters, 3.0))
    base_sums = jax.jit(step.make_loss_sums(loaded.model, True))(merged, batch)
    assert np.isclose(float(base_sums[0]), float(eval3(adapters, loaded.params, batch)[0]), rtol=1e-4)


def test_merge_finds_every_adapter_after_the_same_model_was_traced_without_it(tiny):
    # gemma's Transformer.__call__ is an nn.jit keyed by module and shapes: an earlier trace of an
    # equal model replayed without the merge's interceptor, and merge found 0 einsums (CI, full run).
    loaded, _ = tiny
    model, adapters = lora_parts(loaded)
    tree = lora.merge(loaded.params, adapters)
    jax.eval_shape(lambda p: model.apply({"params": p}, jnp.ones((1, 8), jnp.int32)), tree)
    assert len(lora.adapter_einsums(model, tree)) == len(jax.tree.leaves(adapters)) // 2


def test_lora_dropout_changes_the_train_loss_not_the_eval_loss(tiny, plain_eval):
    loaded, batch = tiny
    _, adapters, eval_plain = plain_eval
    dropped, adapters_d = lora_parts(loaded, dropout=0.5)
    assert jax.tree.structure(adapters) == jax.tree.structure(adapters_d)  # the same params, checkpoints
    tx = optax.sgd(0.0)
    train_drop, eval_drop = step.make_steps(dropped, tx, True, True, dropout_seed=0)

    def train_loss(step_no):
        b = dict(batch, step=np.full((8,), step_no, np.int32))
        return float(train_drop(jax.tree.map(jnp.copy, adapters), tx.init(adapters), loaded.params, b)[2]["loss"])

    sums = eval_drop(adapters, loaded.params, batch)
    no_dropout = float(sums[0] / sums[1])
    assert no_dropout == pytest.approx(float(eval_plain(adapters, loaded.params, batch)[0] / sums[1]), rel=1e-6)
    at0, at1, again0 = train_loss(0), train_loss(1), train_loss(0)
    assert not np.isclose(at0, no_dropout, rtol=1e-4) and not np.isclose(at0, at1, rtol=1e-4)
    assert at0 == again0  # keyed by (seed, step): a resumed run drops the same units
    arrays = data.Arrays(batch["input"], batch["target"], batch["mask"])
    assert data.Batches(arrays, 4, 0, step_column=True).batch(3)["step"].tolist() == [3] * 4


def test_a_real_run_with_every_new_field_logs_their_effects(tmp_path):
    """The Trainer reads the fields from model_config.json: linear schedule logged as optax
    computes it, 2 micro-batches per step, grad_norm logged, dropout and alpha in the step."""
    from gemma_ft_widgets.train import loop

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = config(max_steps=4, batch_size=2, grad_accum_steps=2, lr_schedule="linear", warmup_steps=1,
                 learning_rate=1e-3, weight_decay=0.05, max_grad_norm=0.5, lora_rank=4, lora_alpha=8,
                 lora_dropout=0.1, eval_every=4, checkpoint_every=4, run_name="fields run", tags="a, b")
    contract.atomic_write_json(os.path.join(run_dir, contract.CONFIG_NAME), cfg.to_dict())
    tr = loop.Trainer(str(run_dir), log=lambda m: None)
    result = tr.run()
    assert result.state == "FINISHED" and result.step == 4
    assert tr.batches.batch_size == 4 and "step" in tr.batches.batch(0)
    steps = [e for e in contract.read_jsonl(os.path.join(run_dir, contract.METRICS_NAME)) if e["event"] == "step"]
    want = optax.join_schedules([optax.linear_schedule(0.0, 1e-3, 1), optax.linear_schedule(1e-3, 1e-4, 3)], [1])
    assert [e["lr"] for e in steps] == pytest.approx([float(want(e["step"] - 1)) for e in steps], rel=1e-6)
    assert all(e["grad_norm"] > 0 for e in steps)


def test_an_old_runs_checkpoint_hash_still_matches_its_config():
    from gemma_ft_widgets.train import checkpoints

    old = {"model": "tiny", "dataset": "d.jsonl", "lora_rank": 16, "learning_rate": 1e-3, "max_steps": 100}
    loaded = TrainingConfig.from_dict(old, check_files=False).to_dict()  # the new fields filled in
    written_before = {**loaded}
    for k in ("lora_alpha", "lora_dropout", "weight_decay", "max_grad_norm", "grad_accum_steps", "lr_schedule",
              "run_name", "tags"):
        written_before.pop(k)
    assert checkpoints.config_hash(loaded) == checkpoints.config_hash(written_before)
    assert checkpoints.config_hash({**loaded, "tags": "x", "run_name": "y"}) == checkpoints.config_hash(loaded)
    for change in ({"lora_alpha": 32.0}, {"weight_decay": 0.1}, {"lr_schedule": "linear"}, {"grad_accum_steps": 2}):
        assert checkpoints.config_hash({**loaded, **change}) != checkpoints.config_hash(loaded), change
