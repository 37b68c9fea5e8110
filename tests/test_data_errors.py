"""Tests for vaekit.data.errors: a DatasetError reaches the user as one line naming the source."""

from vaekit.cli import main


def test_a_dataset_error_is_one_clear_line_and_exit_status_2(tmp_path, capsys):
    assert main(["data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "not an existing folder or file" in err
