"""``careplan store check|recover``: a store against what was published from it;
``careplan store reindex``: the indexes kept with the events, rebuilt from the logs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.cli.common import DataDir, NatsUrl, _settings, _with_recovery, console
from services.registry import STORES

app = typer.Typer(help="A store against what was published from it: check, recover after a restore.",
                  no_args_is_help=True)

StoreName = Annotated[str, typer.Argument(help=f"{', '.join(STORES[:-1])} or {STORES[-1]}.")]


@app.command("check")
def store_check(store: StoreName, nats_url: NatsUrl = None, data_dir: DataDir = None) -> None:
    """Compare a store with its relay's position, the stream and its consumers; exit 1 if they disagree."""

    async def check(recovery: Any) -> Any:
        return (await recovery.diagnose())[0]

    diagnosis = _with_recovery(store, nats_url, data_dir, check)
    for line in diagnosis.lines():
        console.print(line)
    if not diagnosis.healthy:
        console.print("Mend it with `careplan store recover` (docs/operations.md, restored store).")
        raise typer.Exit(1)


@app.command("recover")
def store_recover(
    store: StoreName,
    nats_url: NatsUrl = None,
    discard_unpublished: Annotated[bool, typer.Option(
        help="Drop events written after the restore that collide with published ones (never published).")] = False,
    data_dir: DataDir = None,
) -> None:
    """After a restore: take published events back from the stream, move unpublished ones after
    them, set the relay's position, let behind consumers read again. The relay and halted
    consumers go on by themselves; restart the services to rebuild their timers."""
    from services.operations.recovery import RecoveryRefusedError

    async def recover(recovery: Any) -> Any:
        return await recovery.recover(discard_unpublished=discard_unpublished)

    try:
        diagnosis = _with_recovery(store, nats_url, data_dir, recover)
    except RecoveryRefusedError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    for line in diagnosis.lines():
        console.print(line)
    console.print("[green]recovered[/green]" if not diagnosis.healthy else "nothing was changed")


@app.command("reindex")
def store_reindex(
    store: Annotated[list[str] | None, typer.Argument(help="Stores to reindex (all by default).")] = None,
    check: Annotated[bool, typer.Option(help="Only say whether each store's indexes cover its log; exit 1 if not.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Rebuild each store's indexes by causation and by client from its log (services/shared/indexes.py),
    in one transaction per store: once after upgrading a store written before the indexes existed
    (the audit reads scan the logs until then), or to mend them. Run it with the system stopped: the
    rebuild holds the store's write lock (SQLite) or replaces rows writers add to (PostgreSQL)."""
    from services.audit.integrity import store_exists
    from services.audit.reading import Store

    settings = _settings(data_dir)
    unknown = [name for name in store or () if name not in STORES]
    if unknown:
        console.print(f"[red]Not a store: {', '.join(unknown)} (stores: {', '.join(STORES)})[/red]")
        raise typer.Exit(2)
    missing = False
    for name in store or STORES:
        if not store_exists(settings, name):
            continue
        opened = Store(settings, name)
        try:
            if check:
                ready = opened.indexed
                missing |= not ready
                console.print(f"{name}: {'indexed' if ready else 'NOT indexed (run careplan store reindex)'}")
            else:
                console.print(f"{name}: {opened.recorder.reindex(opened.mapper):,} events indexed")
        finally:
            opened.close()
    if missing:
        raise typer.Exit(1)
