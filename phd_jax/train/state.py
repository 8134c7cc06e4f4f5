"""The training state and its step: model + AdamW, initialised in place on the mesh, and the one
jitted train step that `train_and_evaluate`, the benchmarks and the memory measurements share.
"""
from __future__ import annotations

import functools

import jax
import ml_collections
import optax
from flax import nnx

from phd_jax.config.mesh import rules as mesh_rules
from phd_jax.model import sharding
from phd_jax.model.losses import lm_loss
from phd_jax.model.transformer import Transformer
from phd_jax.train.grad_accum import loss_and_grads


def lr_schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup then cosine decay; update number s (from 0) uses lr_schedule(t)(s)."""
  return optax.warmup_cosine_decay_schedule(
      0.0, t.learning_rate, t.warmup_steps, max(t.steps, t.warmup_steps + 1),
      end_value=t.learning_rate * t.end_lr_fraction)


def make_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW, linear warmup then cosine decay, global-norm clipping; no decay on vectors (norms)."""
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(t.grad_clip),
      optax.adamw(lr_schedule(t), b1=t.b1, b2=t.b2, weight_decay=t.weight_decay, mask=decay_mask))


def init_train_objects(cfg: ml_collections.ConfigDict) -> tuple[Transformer, nnx.Optimizer]:
  model = Transformer(cfg.model, rngs=nnx.Rngs(cfg.seed))
  return model, nnx.Optimizer(model, make_optimizer(cfg.train), wrt=nnx.Param)


def create_state(cfg: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh | None = None) -> tuple[nnx.GraphDef, nnx.State]:
  """(graphdef, state) of the model and optimizer: the pure form the jitted steps take.

  With a mesh, the state is initialised directly in its shards (one jit with out_shardings), so
  no device ever holds the whole model.
  """
  if mesh is None:
    return nnx.split(init_train_objects(cfg))
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: init_train_objects(cfg)))
  shardings = sharding.state_shardings(abstract, mesh, mesh_rules(cfg.mesh))
  state = jax.jit(lambda: nnx.split(init_train_objects(cfg))[1], out_shardings=shardings)()
  return graphdef, state


def make_train_step(graphdef: nnx.GraphDef, t: ml_collections.ConfigDict, state_sharding=None,
                    batch_sharding=None):
  """The pure jitted train step over the split (model, optimizer) state.

  With shardings, the step is compiled for them (state and batch laid out on the mesh). Its
  metrics are the loss, the gradient norm and the loss's aux scalars (ce, z_loss).
  """

  @functools.partial(jax.jit, donate_argnums=0, in_shardings=(state_sharding, batch_sharding),
                     out_shardings=(state_sharding, None))
  def train_step(state: nnx.State, batch: dict):
    model, optimizer = nnx.merge(graphdef, state)
    loss, aux, grads = loss_and_grads(lm_loss, model, batch, t)  # microbatched if configured
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), {"loss": loss, "grad_norm": optax.tree.norm(grads),
                                           **aux}

  return train_step
