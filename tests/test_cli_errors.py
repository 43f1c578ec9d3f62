"""The command line's error format: one line on stderr, exit 2, whatever the command."""

from mirage_cli.cli import main


def _err(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err


def test_error_inside_a_progress_bar_is_one_line(tmp_path, capsys):
    # generate fails inside its progress bar; rich used to print a blank line before the error
    code, err = _err(capsys, "generate", str(tmp_path / "missing.png"), "--traj", "orbit_left", "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1


def test_unknown_option_suggests_only_close_names(capsys):
    code, err = _err(capsys, "generate", "x.png", "--bogus", "1")
    assert code == 2 and err.strip() == "error: mirage generate: No such option: --bogus"
    code, err = _err(capsys, "generate", "x.png", "--frmes", "1")
    assert code == 2 and "did you mean --frames?" in err and len(err.splitlines()) == 1


def test_argument_errors_do_not_import_torch():
    """--threads is applied when torch is imported, so a bad option answers without torch's seconds."""
    import subprocess
    import sys

    code = ("import sys; from mirage_cli.cli import main; "
            "c1 = main(['models', 'tiny', 'x', '--kind', 'bogus']); c2 = main(['generate', 'x.png', '--bogus']); "
            "print(c1, c2, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "2", "False"]


def test_threads_are_applied_when_torch_is_imported():
    import subprocess
    import sys

    code = ("from mirage_cli.cli import main; main(['--threads', '1', 'traj', 'list']); "
            "import torch; print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "1"
