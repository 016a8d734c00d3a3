"""Rich progress bars for the render stages, and silencing the libraries' own bars."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

STAGES = ("text", "anchor", "detail", "decode")


def quiet_libraries() -> None:
    """Turn off diffusers' and transformers' download/load bars and info logs."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


class StageProgress:
    """One bar per stage of the prompt being rendered; a line per finished prompt."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, soft_wrap=True)
        self._progress = Progress(
            TextColumn("{task.fields[prompt]:>24.24}"),
            TextColumn("{task.description:<7}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "StageProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def start_prompt(self, prompt_id: str) -> None:
        for task in self._tasks.values():
            self._progress.remove_task(task)
        self._tasks = {
            stage: self._progress.add_task(stage, total=None, prompt=prompt_id) for stage in STAGES
        }

    def update(self, stage: str, done: int, total: int) -> None:
        task = self._tasks.get(stage)
        if task is not None:
            self._progress.update(task, completed=done, total=total)

    def finish_prompt(self, prompt_id: str, output: str) -> None:
        self.console.print(f"[green]done[/] {escape(prompt_id)} -> {escape(output)}")
