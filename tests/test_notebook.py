"""notebooks/quickstart.ipynb runs top to bottom on the CPU (about two minutes)."""
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _text(cell) -> str:
  parts = []
  for out in cell.get("outputs", []):
    parts.append(out.get("text", ""))
    parts.append(out.get("data", {}).get("text/plain", ""))
    parts.append(out.get("data", {}).get("text/markdown", ""))
  return "".join(parts)


def test_quickstart_notebook_runs():
  nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
  # Runs in the repository root, as a user's kernel would in a clone; raises on any cell error.
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(ROOT)}}).execute()
  code = [c for c in nb.cells if c.cell_type == "code"]
  text = [_text(c) for c in code]
  figures = sum("image/png" in out.get("data", {}) for c in code for out in c.get("outputs", []))
  assert figures >= 2, "the mask and loss-curve figures were not drawn"
  assert "done: steps=120" in text[2]  # the training cell ran to its end
  bpb = float(text[2].split("done: steps=120 val_bits_per_byte=")[1].split()[0])
  assert bpb < 4.5, f"a minute of training should beat 8 bits/byte by far, got {bpb}"
  assert text[3].count("----- sample from step 120") == 2
  rows = {tuple(c.strip() for c in line.split("|")[1:5]): line.split("|")[-2].strip()
          for line in text[4].splitlines() if line.startswith("| ")}
  assert rows[("phd", "4", "-", "-")] == "1.000"  # only originals are cached
  assert rows[("phd_cswa", "2", "16", "32")] != "1.000"  # plus a window of hidden tokens
  assert rows[("repeat", "4", "-", "-")] == "4.000"
