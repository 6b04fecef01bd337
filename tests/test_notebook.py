"""colabs/maskgit_demo.ipynb runs headless on a tiny trained run."""
import pathlib

import nbclient
import nbformat

import tiny_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "colabs" / "maskgit_demo.ipynb"


def test_demo_notebook_runs(tmp_path_factory, monkeypatch):
  workdir = tiny_run.tiny_workdir(tmp_path_factory)
  monkeypatch.setenv("MASKGIT_DEMO_CHECKPOINT", str(workdir))
  monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("notebook")))
  released = tmp_path_factory.mktemp("released")  # empty: section skipped
  monkeypatch.setenv("MASKGIT_RELEASED_DIR", str(released))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  assert not any(cell.get("outputs") for cell in notebook.cells
                 if cell.cell_type == "code"), "commit the notebook clean"
  client = nbclient.NotebookClient(
      notebook, timeout=120, kernel_name="python3",
      resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()  # Raises CellExecutionError on any failing cell.
  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.outputs]
  text = "".join(o.get("text", "") for o in outputs
                 if o.output_type == "stream")
  assert f"Loaded {workdir}: 16x16 images, 8x8 tokens, 10 classes." in text
  assert (f"Released ImageNet checkpoints: absent from {released}; section "
          "skipped.") in text
  images = [mime for o in outputs if o.output_type == "display_data"
            for mime in o.data if mime.startswith("image/")]
  # Samples, inpainting, editing and the strip as PNG; the decoding as GIF.
  assert images == ["image/png"] * 4 + ["image/gif"], images
