"""A run's tokenizer in the Hugging Face format, both ways, so an export stands on its own and an
import carries the checkpoint's own tokenizer.

Export writes what `transformers.AutoTokenizer` loads: the run's tokenizer.json (or SentencePiece
tokenizer.model) with a tokenizer_config.json naming its special tokens; a byte-level run gets a
tokenizer.json that encodes exactly as `ByteTokenizer` does (byte b -> id b, EOS 256). Our
documents are separated by EOS and have no BOS token, so EOS also serves as BOS (as in GPT-2 and
OLMo); the pad token is the tokenizer's own when it has one, else EOS. (One difference: HF
tokenizers read the literal text "<|endoftext|>" as the EOS token, which ByteTokenizer spells
out in bytes.)
"""
from __future__ import annotations

import json

from phd_jax import files as fs
from phd_jax.data import tokenizers
from phd_jax.data.tokenizers import Tokenizer

EOS_TOKEN = "<|endoftext|>"  # the name of ByteTokenizer's EOS (id 256) in its exported form
PAD_NAMES = ("<|pad|>", "<|padding|>", "<pad>", "[PAD]")  # OLMo2, gpt-neox (OLMo), others


def _bytes_to_unicode() -> dict[int, str]:
  """The byte-level alphabet (GPT-2's): printable bytes as themselves, the rest shifted past 255,
  so every byte is one visible character of tokenizer.json."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  out, extra = {}, 0
  for b in range(256):
    if b in keep:
      out[b] = chr(b)
    else:
      out[b] = chr(256 + extra)
      extra += 1
  return out


def byte_tokenizer_json() -> str:
  """tokenizer.json of ByteTokenizer: a byte-level BPE with no merges, EOS as id 256."""
  import tokenizers
  vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                          use_regex=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  tok.add_special_tokens([tokenizers.AddedToken(EOS_TOKEN, special=True)])
  return tok.to_str()


def _pad_id(tok: Tokenizer) -> int:
  if isinstance(tok, tokenizers.HFTokenizer):
    for name in PAD_NAMES:
      i = tok.tok.token_to_id(name)
      if i is not None:
        return i
  return tok.eos_id


def special_ids(tok: Tokenizer) -> dict[str, int]:
  """config.json's and generation_config.json's special-token ids for a run's tokenizer."""
  return {"bos_token_id": tok.eos_id, "eos_token_id": tok.eos_id, "pad_token_id": _pad_id(tok)}


def _token(tok: Tokenizer, i: int) -> str:
  if isinstance(tok, tokenizers.HFTokenizer):
    return tok.tok.id_to_token(i)
  if isinstance(tok, tokenizers.SentencePieceTokenizer):
    return tok.sp.id_to_piece(i)
  return EOS_TOKEN


def export_tokenizer(tok: Tokenizer, out_dir: str, max_length: int) -> list[str]:
  """Writes the tokenizer files into `out_dir`; returns their names."""
  ids = special_ids(tok)
  names = {k.replace("_id", ""): _token(tok, i) for k, i in ids.items()}
  config = {"model_max_length": max_length, "clean_up_tokenization_spaces": False, **names}
  if isinstance(tok, tokenizers.SentencePieceTokenizer):
    fs.copy_file(tok.path, fs.join(out_dir, "tokenizer.model"))
    config.update(tokenizer_class="LlamaTokenizer", add_bos_token=False, add_eos_token=False,
                  legacy=True)
    files = ["tokenizer.model"]
  else:
    text = fs.read_text(tok.path) if tok.path else byte_tokenizer_json()
    fs.write_text(fs.join(out_dir, "tokenizer.json"), text)
    config.update(tokenizer_class="PreTrainedTokenizerFast")
    files = ["tokenizer.json"]
  fs.write_text(fs.join(out_dir, "tokenizer_config.json"), json.dumps(config, indent=2))
  return [*files, "tokenizer_config.json"]


def find_tokenizer(hf_dir: str) -> str | None:
  """The tokenizer file a Hugging Face directory carries (tokenizer.json, else tokenizer.model);
  "bytes" for the tokenizer.json a byte-level run's export wrote; None without one."""
  for name in ("tokenizer.json", "tokenizer.model"):
    path = fs.join(hf_dir, name)
    if fs.isfile(path):
      if name == "tokenizer.json" and fs.read_text(path) == byte_tokenizer_json():
        return "bytes"
      return path
  return None


def check_fits(tok: Tokenizer, rows: int, where: str, flag: str = "--tokenizer") -> None:
  """Refuses a tokenizer that is not the checkpoint's: ids past its embedding, or one that
  covers under half of it (a byte tokenizer on a 100k-row embedding generates garbage); `flag`
  is what the message tells to set."""
  if tok.vocab_size > rows or 2 * tok.vocab_size <= rows:
    raise ValueError(f"the tokenizer {tok.path or tok.name} has {tok.vocab_size} ids but the "
                     f"checkpoint's embedding in {where} has {rows} rows: not this checkpoint's "
                     f"tokenizer; give the right one with {flag}=PATH (tokenizer.json or "
                     ".model)")
