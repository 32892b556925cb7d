"""``careplan views run|rebuild|status``: the read models (caseload, outcomes, progress)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import DataDir, _logging, _settings, console

app = typer.Typer(help="The read models behind /caseload, /plans and /outcomes: run, rebuild, status.",
                  no_args_is_help=True)


@app.command("run")
def views_run(
    ready_file: Annotated[Path | None, typer.Option(help="Written once the views have caught up.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Keep the views up to date with the stores until Ctrl-C or SIGTERM (a process of `careplan up`)."""
    from services.views.process import run_views_process

    _logging()
    run_views_process(_settings(data_dir), ready_file=ready_file)


@app.command("rebuild")
def views_rebuild(data_dir: DataDir = None) -> None:
    """Empty the views and build them again from every store's log, from the start."""
    from services.views.projection import Projection

    projection = Projection(_settings(data_dir))
    try:
        started = time.perf_counter()
        applied = projection.rebuild()
        seconds = time.perf_counter() - started
        positions = ", ".join(f"{name} {position}" for name, position in projection.store.positions().items())
        console.print(f"views rebuilt: {applied} events applied in {seconds:.2f} s (positions: {positions})")
    finally:
        projection.close()


@app.command("status")
def views_status(data_dir: DataDir = None) -> None:
    """Each store's position in the views against the end of its log."""
    from services.views.projection import Projection

    projection = Projection(_settings(data_dir))
    try:
        positions, lag = projection.store.positions(), projection.lag()
        for name in projection.sources:
            console.print(f"{name}: {positions[name]} of {positions[name] + lag[name]} ({lag[name]} behind)")
    finally:
        projection.close()
