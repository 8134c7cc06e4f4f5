"""OLMo2 weights in and out of the Hugging Face format (safetensors + config.json; no torch).

Our vanilla model *is* OLMo2 (phd_jax/model/transformer.py), so a transformers
`Olmo2ForCausalLM` directory maps tensor for tensor onto a Transformer, and PHD reuses the same
weights (it adds no parameters):
  load_olmo2(hf_dir, phd=None)       -> Transformer (PHD too, given `cfg.model.phd` fields)
  save_olmo2(model, out_dir)         -> a directory transformers loads (K = 1 models only)
  import_weights(hf_dir, out, cfg)   -> model-only weights a run starts from (`phd-hf import`;
                                        `phd-train --config.train.init_from=OUT`)
HF Linear weights are [out, in]; ours (nnx.Linear kernels) are [in, out].
Every directory may be a local folder or a gs:// / s3:// URL: all file access goes through
phd_jax/files.
"""
from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
from flax import nnx, traverse_util

from phd_jax import config
from phd_jax import files as fs
from phd_jax.checkpoints.checkpoint import Checkpointer
from phd_jax.data import tokenizers
from phd_jax.data.tokenizers import Tokenizer
from phd_jax.interop import hf_tokenizer
from phd_jax.model.transformer import Transformer

# Our path inside a Block -> the HF name inside model.layers.N.
_BLOCK = {
    ("attn", "q_proj", "kernel"): "self_attn.q_proj.weight",
    ("attn", "k_proj", "kernel"): "self_attn.k_proj.weight",
    ("attn", "v_proj", "kernel"): "self_attn.v_proj.weight",
    ("attn", "o_proj", "kernel"): "self_attn.o_proj.weight",
    ("attn", "q_norm", "scale"): "self_attn.q_norm.weight",
    ("attn", "k_norm", "scale"): "self_attn.k_norm.weight",
    ("attn_norm", "scale"): "post_attention_layernorm.weight",
    ("mlp", "gate", "kernel"): "mlp.gate_proj.weight",
    ("mlp", "up", "kernel"): "mlp.up_proj.weight",
    ("mlp", "down", "kernel"): "mlp.down_proj.weight",
    ("mlp_norm", "scale"): "post_feedforward_layernorm.weight",
}
_TOP = {("embed", "embedding"): "model.embed_tokens.weight",
        ("final_norm", "scale"): "model.norm.weight",
        ("lm_head", "kernel"): "lm_head.weight"}
MAX_POSITIONS = 4096  # config.json's max_position_embeddings: RoPE has no hard limit
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved


class OLMo2FormatError(ValueError):
  """The directory is not an OLMo2 checkpoint this model can represent."""


def read_config(hf_dir: str) -> dict:
  """config.json of `hf_dir` (a local folder or a bucket URL), checked to be OLMo2's."""
  path = fs.join(hf_dir, "config.json")
  if not fs.isfile(path):
    raise OLMo2FormatError(f"{hf_dir} has no config.json: not a Hugging Face model directory")
  hf = json.loads(fs.read_text(path))
  if hf.get("model_type") != "olmo2":
    raise OLMo2FormatError(f"{path}: model_type={hf.get('model_type')!r} is not supported: "
                           "only 'olmo2' (transformers' Olmo2ForCausalLM) loads")
  return hf


def _hf_field(hf: dict, field: str, where: str, default=None):
  if field not in hf and default is None:
    raise OLMo2FormatError(f"{where}: field {field!r} is missing")
  return hf.get(field, default)


def _rope_theta(hf: dict, where: str) -> float:
  """rope_theta of the plain rotate-half RoPE; scaled or partial RoPE is refused."""
  params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type != "default":
    raise OLMo2FormatError(f"{where}: rope type {rope_type!r} (rope_parameters/rope_scaling) is "
                           "not supported: only the default (unscaled) RoPE")
  partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
  if partial != 1.0:
    raise OLMo2FormatError(f"{where}: partial_rotary_factor={partial} is not supported (only 1)")
  return float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))


def olmo2_model_config(hf: dict, base: ml_collections.ConfigDict | None = None,
                       phd: dict | None = None,
                       where: str = "config.json") -> ml_collections.ConfigDict:
  """cfg.model with OLMo2's shapes from an HF config dict; everything else from `base`.

  base: a cfg.model to take dtypes, remat, scan_layers, attention_impl and phd from (default:
  the library's defaults). phd: fields of cfg.model.phd to set on top (e.g. variant, num_copies).
  """
  m = ml_collections.ConfigDict((base or config.default_config().model).to_dict())
  if hf.get("hidden_act", "silu") != "silu":
    raise OLMo2FormatError(f"{where}: hidden_act={hf['hidden_act']!r} is not supported "
                           "(OLMo2's SwiGLU uses 'silu')")
  for field in ("attention_bias", "mlp_bias"):
    if hf.get(field, False):
      raise OLMo2FormatError(f"{where}: {field}=true is not supported: the model has no biases")
  heads = int(_hf_field(hf, "num_attention_heads", where))
  d = int(_hf_field(hf, "hidden_size", where))
  m.update(num_layers=int(_hf_field(hf, "num_hidden_layers", where)), d_model=d,
           num_heads=heads, num_kv_heads=int(hf.get("num_key_value_heads") or heads),
           head_dim=int(hf.get("head_dim") or d // heads),
           mlp_dim=int(_hf_field(hf, "intermediate_size", where)),
           vocab_size=int(_hf_field(hf, "vocab_size", where)),
           tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
           rope_theta=_rope_theta(hf, where), norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
           qk_norm="full")
  if phd:
    unknown = set(phd) - set(m.phd)
    if unknown:
      raise ValueError(f"phd={phd}: unknown fields {sorted(unknown)}; allowed: {sorted(m.phd)}")
    m.phd.update(phd)
  return m


def read_tensors(hf_dir: str) -> dict[str, np.ndarray]:
  """Every tensor of model.safetensors, or of the shards a model.safetensors.index.json lists.

  From a bucket, each file is downloaded to a local temporary file (safetensors opens local files
  only) and removed once read: one shard at a time on disk, and memory holds only the tensors,
  never a shard's bytes besides them (as reading whole objects into memory would).
  """
  from safetensors import safe_open  # local: only interop needs it
  index = fs.join(hf_dir, "model.safetensors.index.json")
  if fs.isfile(index):
    files = sorted(set(json.loads(fs.read_text(index))["weight_map"].values()))
  elif fs.isfile(fs.join(hf_dir, "model.safetensors")):
    files = ["model.safetensors"]
  else:
    raise OLMo2FormatError(f"{hf_dir} has neither model.safetensors nor "
                           "model.safetensors.index.json (only safetensors weights load)")
  tensors = {}
  for name in files:
    with fs.local_copy(fs.join(hf_dir, name)) as local, safe_open(local, framework="numpy") as f:
      for key in f.keys():
        tensors[key] = f.get_tensor(key)  # a copy in memory: the file may go afterwards
  return tensors


def _abstract(m: ml_collections.ConfigDict):
  """(graphdef, {flat path: ShapeDtypeStruct}) of the model `m` describes, nothing allocated."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(m, rngs=nnx.Rngs(0))))
  return graphdef, state, traverse_util.flatten_dict(nnx.to_pure_dict(state))


def _hf_names(path: tuple, m: ml_collections.ConfigDict) -> list[str] | None:
  """HF tensor name(s) of one of our parameters: one per layer for scanned ones; None: no twin."""
  if path in _TOP:
    return [_TOP[path]]
  if path[0] != "layers":
    return None
  if m.scan_layers:
    return [f"model.layers.{i}.{_BLOCK[path[1:]]}" for i in range(m.num_layers)]
  return [f"model.layers.{path[1]}.{_BLOCK[path[2:]]}"]


def olmo2_params(tensors: dict[str, np.ndarray], m: ml_collections.ConfigDict,
                 where: str = "") -> dict:
  """HF tensors -> the pure dict of our parameters (nnx.to_pure_dict form) for config `m`."""
  _, _, flat = _abstract(m)
  out, used = {}, set()
  for path, leaf in flat.items():
    names = _hf_names(path, m)
    if names is None:  # copy_embed: a PHD option with no OLMo2 twin, zero-initialised
      out[path] = np.zeros(leaf.shape, leaf.dtype)
      continue
    arrays = []
    for name in names:
      if name not in tensors:
        raise OLMo2FormatError(f"{where}: tensor {name} is missing")
      a = tensors[name]
      shape = leaf.shape[1:] if m.scan_layers and path[0] == "layers" else leaf.shape
      want = tuple(shape[::-1] if path[-1] == "kernel" else shape)
      if tuple(a.shape) != want:
        raise OLMo2FormatError(f"{where}: tensor {name} has shape {tuple(a.shape)}, but "
                               f"config.json implies {want}")
      arrays.append(a.T if path[-1] == "kernel" else a)
      used.add(name)
    stacked = np.stack(arrays) if m.scan_layers and path[0] == "layers" else arrays[0]
    out[path] = np.asarray(stacked, dtype=leaf.dtype)
  if m.tie_embeddings:
    used.add("lm_head.weight")  # transformers may store the tied head too
  unused = sorted(n for n in set(tensors) - used if not n.endswith(_IGNORED_SUFFIXES))
  if unused:
    raise OLMo2FormatError(f"{where}: tensors with no place in an OLMo2 model of this "
                           f"config: {unused[:5]}{' ...' if len(unused) > 5 else ''}")
  return traverse_util.unflatten_dict(out)


def load_olmo2(hf_dir: str, phd: dict | None = None,
               base: ml_collections.ConfigDict | None = None) -> Transformer:
  """A Transformer holding the weights of a transformers Olmo2ForCausalLM directory.

  phd: `cfg.model.phd` fields (variant, num_copies, ...) to make the same weights a PHD model.
  base: a cfg.model for the fields config.json does not set (dtypes, remat, scan_layers, ...).
  """
  m = olmo2_model_config(read_config(hf_dir), base, phd, fs.join(hf_dir, "config.json"))
  return _model(m, olmo2_params(read_tensors(hf_dir), m, hf_dir))


def _model(m: ml_collections.ConfigDict, params: dict) -> Transformer:
  """The Transformer of config `m` holding `params` (olmo2_params' pure dict)."""
  graphdef, state, _ = _abstract(m)
  nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, params))
  return nnx.merge(graphdef, state)


def _export_refusal(model: Transformer) -> str | None:
  spec = model.spec
  if spec.num_copies != 1:
    return (f"it runs K={spec.num_copies} copies per token (variant {spec.variant!r}); "
            "transformers' OLMo2 runs each token once, so only K=1 (vanilla) models export")
  if model.copy_embed is not None:
    return "it has a copy embedding (model.phd.copy_embedding), which OLMo2 lacks"
  if model.config.qk_norm != "full":
    return (f"model.qk_norm={model.config.qk_norm!r}: OLMo2 normalises the whole q and k "
            "projections (qk_norm='full')")
  return None


def save_olmo2(model: Transformer, out_dir: str, tokenizer: Tokenizer | None = None,
               max_length: int = MAX_POSITIONS) -> None:
  """Writes config.json + model.safetensors (fp32) that transformers loads as Olmo2ForCausalLM;
  with the run's `tokenizer`, also its files (phd_jax/interop/hf_tokenizer.py), its special ids
  in config.json and a generation_config.json, so the directory stands on its own.

  `out_dir` may be a bucket URL: each file is written locally and uploaded whole once complete.
  """
  from safetensors.numpy import save_file
  why = _export_refusal(model)
  if why:
    raise ValueError(f"save_olmo2: cannot export this model as OLMo2: {why}")
  m = model.config
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  tensors = {}
  for path, value in flat.items():
    names = _hf_names(path, m)
    a = np.asarray(jax.device_get(value), np.float32)
    per_name = list(a) if m.scan_layers and path[0] == "layers" else [a]
    for name, x in zip(names, per_name):
      tensors[name] = np.ascontiguousarray(x.T if path[-1] == "kernel" else x)
  hf = {"architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2",
        "vocab_size": m.vocab_size, "hidden_size": m.d_model, "intermediate_size": m.mlp_dim,
        "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads,
        "num_key_value_heads": m.num_kv_heads, "head_dim": m.head_dim, "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS, "rms_norm_eps": m.norm_eps,
        "rope_theta": m.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta},
        "attention_bias": False, "attention_dropout": 0.0,
        "tie_word_embeddings": m.tie_embeddings, "torch_dtype": "float32",
        "pad_token_id": None, "bos_token_id": None, "eos_token_id": None}
  if tokenizer is not None:
    if tokenizer.vocab_size > m.vocab_size:
      raise ValueError(f"save_olmo2: the tokenizer has {tokenizer.vocab_size} ids but the model "
                       f"only {m.vocab_size} embedding rows")
    hf.update(hf_tokenizer.special_ids(tokenizer))
    hf_tokenizer.export_tokenizer(tokenizer, out_dir, max_length)
    fs.write_text(fs.join(out_dir, "generation_config.json"), json.dumps(
        {"_from_model_config": True, **hf_tokenizer.special_ids(tokenizer)}, indent=2))
  stale = fs.join(out_dir, "model.safetensors.index.json")  # would shadow the new weights
  if fs.exists(stale):
    fs.remove(stale)
  with fs.atomic_path(fs.join(out_dir, "model.safetensors")) as tmp:
    save_file(tensors, tmp, metadata={"format": "pt"})
  fs.write_text(fs.join(out_dir, "config.json"), json.dumps(hf, indent=2))


def import_weights(hf_dir: str, out: str, cfg: ml_collections.ConfigDict | None = None,
                   tokenizer: str | None = None) -> str:
  """Writes OUT: model-only weights a run starts from (`config.train.init_from=OUT`).

  OUT holds the OLMo2 weights as a checkpoint of the model's parameters alone (one step, 0; no
  optimizer state), the config (`cfg`, default the library's, with OLMo2's shapes from
  config.json) and the tokenizer: `tokenizer` if given, else the one `hf_dir` carries, else
  cfg's; it must fit the embedding. phd-generate, phd-evaluate and phd-hf export read OUT as they
  read a run. Returns the tokenizer used.
  """
  cfg = ml_collections.ConfigDict((cfg or config.default_config()).to_dict())
  where = fs.join(hf_dir, "config.json")
  cfg.model = olmo2_model_config(read_config(hf_dir), cfg.model, where=where)
  config.model_spec(cfg.model)
  spec = tokenizer or hf_tokenizer.find_tokenizer(hf_dir) or cfg.data.tokenizer
  tok = tokenizers.load(spec)
  hf_tokenizer.check_fits(tok, cfg.model.vocab_size, where)
  # The copy (below) travels with the weights; a run started from them checks it is its own.
  cfg.data.tokenizer = fs.join(out, tokenizers.RUN_FILES[tok.kind]) if tok.path else "bytes"
  ckpt = Checkpointer(out, keep=1)
  try:
    existing = ckpt.latest_step()
    if existing is not None:
      raise ValueError(f"{out} already holds checkpoints (step {existing}); import into a new "
                       "folder. Nothing was overwritten.")
    model = _model(cfg.model, olmo2_params(read_tensors(hf_dir), cfg.model, hf_dir))
    tokenizers.save_to_run(tok, out)
    ckpt.save(0, nnx.state((model,)), None, cfg)  # subtree 0, as a training checkpoint's model
    ckpt.wait()
  finally:
    ckpt.close()
  return spec
