"""common/files: where an output file can be made, checked before the work
that ends in writing it (before: an OS error after sampling, or a
traceback)."""
import pytest

from maskgit_jax.common import files


def test_output_location_under_a_file_or_at_a_folder_is_refused(tmp_path):
  afile = tmp_path / "notes.txt"
  afile.write_text("mine")
  files.check_output_location(str(tmp_path / "new" / "deeper" / "x.png"))
  files.check_output_location(str(afile))  # Replacing a file: the caller's.
  with pytest.raises(ValueError, match=r"Cannot write .*notes.txt/a/x.png: "
                     r".*notes.txt is a file, not a folder\.$"):
    files.check_output_location(str(afile / "a" / "x.png"))
  with pytest.raises(ValueError, match=r"Cannot write .*: it is a folder\.$"):
    files.check_output_location(str(tmp_path))
  with pytest.raises(ValueError, match=r"notes.txt is a file, not a folder"):
    files.check_image_path(str(afile / "grid.png"))
  with pytest.raises(ValueError, match=r"its extension is not"):
    files.check_image_path(str(tmp_path / "grid.txt"))
  assert afile.read_text() == "mine"
