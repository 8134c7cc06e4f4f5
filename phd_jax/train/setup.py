"""Everything a training run holds before its first step, built (or restored) in one call.

Every check that can fail does so here, each once, and before the model and its state are
built: the workdir (one probe of a bucket), the config against its tokenizer (loaded once), the
in-training eval tasks, the run's metrics.jsonl, the data. What only a restore can tell, a
checkpoint of another model, fails here too, before the first step compiles.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import jax
import ml_collections
from flax import nnx

from phd_jax.checkpoints import tiers
from phd_jax.checkpoints.checkpoint import Checkpointer, check_compatible, saved_run_config, warn
from phd_jax.checkpoints.workdir import check_workdir, create_workdir
from phd_jax.config import resolve_vocab_size, validate_config
from phd_jax.config.mesh import rules as mesh_rules
from phd_jax.data import mixture, tokenizers
from phd_jax.eval import tasks as eval_tasks
from phd_jax.model import sharding
from phd_jax.model.transformer import param_count
from phd_jax.spec import PHDSpec
from phd_jax.train import init_from
from phd_jax.train.goodput import Clock
from phd_jax.train.metrics import read_log
from phd_jax.train.state import create_state, make_train_step


@dataclasses.dataclass
class TrainSession:
  """What one training process holds for its run (a run is a workdir's training, across all
  the processes and restarts that train it)."""

  cfg: ml_collections.ConfigDict
  workdir: str  # absolute
  spec: PHDSpec
  tokenizer: tokenizers.Tokenizer
  mesh: jax.sharding.Mesh
  axis_rules: tuple
  graphdef: nnx.GraphDef
  state: nnx.State  # (model, optimizer), laid out on the mesh
  state_sharding: object
  batch_sharding: jax.sharding.NamedSharding
  train_step: Callable
  train_iter: Iterator  # this host's batches; its position is checkpointed
  val_batches: dict  # per data source: global arrays, the same at every validation
  ckpt: Checkpointer
  start: int  # the last step done before this process started (0: a new run)
  say: Callable[..., None]  # prints on process 0 only
  chief: bool
  eval_tasks: tuple[list[str], object]  # config.eval's task names and their lm-eval TaskManager
  metrics_rows: list[dict] | None  # the workdir's metrics.jsonl as it was (process 0; None: none)
  data: mixture.Mixture | None = None  # the sources, their weights and schedule
  local: Checkpointer | None = None  # the node-local tier (checkpoints/tiers.py); None: off
  clock: Clock = dataclasses.field(default_factory=Clock)  # where the time goes (goodput.py)

  def next_batch(self) -> dict:
    with self.clock.part("data"):
      return sharding.global_batch(next(self.train_iter), self.batch_sharding)


def start_session(cfg: ml_collections.ConfigDict | None, workdir: str,
                  clock: Clock | None = None) -> TrainSession:
  """Validates, builds the state on the mesh and resumes from the workdir's latest checkpoint;
  `cfg` None: the config saved in the workdir (a run resumed, or imported by phd-hf). `clock`:
  the process's goodput clock (None: one from now), which times the restore."""
  clock = clock or Clock()
  chief = jax.process_index() == 0  # only process 0 prints and writes metrics
  say = (lambda *a, **k: print(*a, **k, flush=True)) if chief else (lambda *a, **k: None)
  workdir = check_workdir(workdir)  # a file, a bucket out of reach, foreign checkpoints
  if cfg is None and (cfg := saved_run_config(workdir)) is None:
    raise ValueError(f"--config is required: {workdir} holds no run to resume (e.g. "
                     "--config=configs/quickstart.py)")
  tok = tokenizers.from_config(cfg.data)  # the one load: validation, data and the run's copy
  resolve_vocab_size(cfg, tok.vocab_size, say)  # "auto": before anything is sized
  spec = validate_config(cfg, tok.vocab_size)
  t = cfg.train
  tasks = eval_tasks.config_tasks(cfg.eval)
  rows = read_log(workdir) if chief else None  # a corrupt metrics.jsonl fails now
  create_workdir(workdir)  # a local one: created, and proved writable
  data = mixture.load(cfg.data, tok, cfg.model.vocab_size, t.seq_len, t.batch_size, t.val_batches)
  say(data.description)
  if chief:
    tokenizers.save_to_run(tok, workdir)  # generate and evaluate load the run's own copy

  mesh, axis_rules = sharding.make_mesh(cfg.mesh), mesh_rules(cfg.mesh)
  hosts, host = jax.process_count(), jax.process_index()
  if t.batch_size % hosts:
    raise ValueError(f"config.train.batch_size={t.batch_size} must divide among {hosts} hosts")
  graphdef, state = create_state(cfg, mesh)
  batch_sh = sharding.batch_sharding(mesh, axis_rules)
  state_sh = jax.tree.map(lambda x: x.sharding, state)
  train_iter = data.train_iterator(t.batch_size, cfg.data.seed, host, hosts)
  val = {name: [sharding.global_batch({k: v[host::hosts] for k, v in b.items()}, batch_sh)
                for b in batches] for name, batches in data.val.items()}
  ckpt, local = Checkpointer(workdir, t.keep_checkpoints), None
  try:  # a start that fails from here closes what it opened, on every process alike
    log = warn if chief else (lambda message: None)  # recovery notes, on stderr
    ckpt.clean_temporaries(log)  # what a save cut short (a crash, a full disk) left behind
    local = tiers.open_local(cfg, workdir, state, log)  # None unless train.local_checkpoint_every

    def restore(tier: Checkpointer, step: int) -> list[str]:  # checks the step that restores
      changed = check_compatible(workdir, step, tier.saved_config(step), cfg)
      tier.restore(step, state, train_iter)
      return changed

    # The newest step that restores from either tier; newer damaged ones are named and moved
    # aside (STEP.damaged).
    with clock.part("restore"):
      found = tiers.restore_newest(ckpt, local, restore, log)
    start = found[1] if found else 0
    if found:
      say(f"resumed from step {start} in {workdir}{tiers.describe(found[0], local)}"
          + (f" (changed model fields: {'; '.join(found[2])})" if found[2] else ""))
    init_from.initialize(cfg, state, tok, start if found else None, say)  # new runs only
    say(f"model: {param_count(nnx.merge(graphdef, state)[0]) / 1e6:.2f}M params, variant "
        f"{spec.variant} K={spec.num_copies} W={spec.window} C={spec.chunk}, "
        f"{spec.num_copies * t.seq_len} model tokens per sequence; mesh {dict(mesh.shape)} over "
        f"{hosts} host(s); training steps {start + 1}..{t.steps}")
    return TrainSession(cfg, workdir, spec, tok, mesh, axis_rules, graphdef, state, state_sh,
                        batch_sh, make_train_step(graphdef, t, state_sh, batch_sh), train_iter, val,
                        ckpt, start, say, chief, tasks, rows, data, local, clock)
  except BaseException:
    for tier in (ckpt, local):
      if tier is not None:
        tier.close()
    raise
