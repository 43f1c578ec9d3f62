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


# ------------------------------------------------------------------------------------ issue 22
def test_debug_on_a_bad_input_shows_the_traceback_and_still_exits_2(tmp_path):
    import subprocess
    import sys

    for args in (["generate", str(tmp_path / "missing.png"), "--traj", "orbit_left"], ["generate", "x.png", "--frmes", "1"]):
        p = subprocess.run([sys.executable, "-m", "mirage_cli", "--threads", "1", "--debug", *args],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "Traceback" in p.stderr, (args, p.returncode, p.stderr[-500:])


def test_help_texts_escape_their_brackets():
    """rich read `[default: 49; orbit_360: 81]` as markup and dropped it: `Number of frames .`."""
    import re

    import typer

    from mirage_cli.cli import app

    def walk(command):
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)

    unescaped = [(c.name, p.name, p.help) for c in walk(typer.main.get_command(app)) for p in c.params
                 if re.search(r"(?<!\\)\[[a-z]", getattr(p, "help", None) or "")]
    assert not unescaped, unescaped


def test_traj_preset_help_shows_its_defaults(capsys):
    assert main(["traj", "preset", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Number of frames [default: 49; orbit_360:" in text and "frames ." not in text


def test_ctrl_c_during_start_up_does_not_claim_kept_outputs(small_scene, tmp_path, monkeypatch, capsys):
    import mirage_cli.pipeline.generate as g

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(g, "prepare_trajectory", stop)
    code, err = _err(capsys, "generate", str(small_scene["image"]), "--traj", "orbit_left", "--out", str(tmp_path / "o"))
    assert code == 130 and "interrupted" in err and "kept" not in err and not (tmp_path / "o").exists()
