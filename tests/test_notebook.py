"""colabs/maskgit_demo.ipynb runs headless on a tiny trained run, and its
released-ImageNet section on released-format files of random weights."""
import pathlib

import flax
import nbclient
import nbformat

from maskgit_jax.store import loader
import test_train
import tiny_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "colabs" / "maskgit_demo.ipynb"


def test_demo_notebook_runs(tmp_path_factory, monkeypatch):
  workdir = tiny_run.tiny_workdir(tmp_path_factory)
  monkeypatch.setenv("MASKGIT_DEMO_CHECKPOINT", str(workdir))
  monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("notebook")))
  released = tmp_path_factory.mktemp("released")
  _write_released(released, tmp_path_factory)
  monkeypatch.setenv("MASKGIT_RELEASED_DIR", str(released))
  monkeypatch.setenv("MASKGIT_RELEASED_CONFIG", str(released / "config.py"))
  monkeypatch.setenv("MASKGIT_IMAGENET_CLASSES", "0,2")
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
  assert "Released ImageNet checkpoints: found" in text
  assert "redrawn as class 2:" in text
  images = [mime for o in outputs if o.output_type == "display_data"
            for mime in o.data if mime.startswith("image/")]
  # Samples, inpainting, editing and the strip as PNG; the decoding as GIF;
  # then the released models' samples and box editing.
  assert images == ["image/png"] * 4 + ["image/gif"] + ["image/png"] * 2, (
      images)


def _write_released(folder, tmp_path_factory):
  """Released-format files (Flax msgpack of {"params": ...}) of random
  weights under the release's file names, and a config file for them."""
  del tmp_path_factory
  tests = pathlib.Path(__file__).resolve().parent
  (folder / "config.py").write_text(
      "import sys\n"
      f"sys.path.insert(0, {str(tests)!r})\n"
      "import test_train\n\n\n"
      "def get_config():\n"
      "  config = test_train.tiny_config()\n"
      f"  config.image_size = {tiny_run.IMAGE_SIZE}\n"
      "  return config\n")
  config = test_train.tiny_config()
  config.image_size = tiny_run.IMAGE_SIZE
  models = loader.load_models(config, random_init=True,
                              required=loader.STAGES)
  for stage, name in (("tokenizer", "tokenizer"), ("transformer", "maskgit")):
    (folder / f"{name}_imagenet256_checkpoint").write_bytes(
        flax.serialization.to_bytes(models.variables(stage)))
