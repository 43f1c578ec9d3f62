"""Shared rich consoles (stdout for results, stderr for messages and progress) and the progress bar."""

from rich.console import Console
from rich.progress import Progress as _RichProgress
from rich.text import Text

console = Console()
err_console = Console(stderr=True)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 chunk``, ``3 chunks``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


class Progress(_RichProgress):
    """rich's Progress without the blank line it prints on stop when stderr is not a terminal
    (piped, CI, tests). That line came before every error raised inside ``with progress:``,
    making the one-line error two lines; a bar that showed tasks keeps its closing line."""

    def stop(self) -> None:
        if self.disable or self.tasks:
            super().stop()
        else:
            self.live.stop()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self.disable:
            self.live.stop()  # the error's line follows directly
        else:
            self.stop()


def print_trimmed(renderable, target: Console = console) -> None:
    """Print ``renderable`` (a borderless table) without the spaces rich pads every line with to
    the table's width: copied or piped output then has no trailing blanks."""
    for line in target.render_lines(renderable, pad=False, new_lines=False):
        text = Text.assemble(*((seg.text, seg.style or "") for seg in line if not seg.control))  # "": no style, as None
        text.rstrip()
        target.print(text, soft_wrap=True, highlight=False)
