"""`idgenrec ids ...`: warm up the ID generator, generate the ID table, show an item's ID."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idgenrec.cli.common import DEFAULT_PARAMS, ParamsOption, PreparedOption, fail, read_params
from idgenrec.layout import LAYOUT

app = typer.Typer(no_args_is_help=True)

TABLE_FILE = LAYOUT.id_table.name  # the table's name inside the --output folder of `ids generate`


@app.command("warmup")
def warmup(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = LAYOUT.prepared,
    output: Annotated[Path, typer.Option(help="Checkpoint folder to write.")] = LAYOUT.generator,
    metrics: Annotated[Path, typer.Option(help="Warm-up metrics JSON to write.")] = LAYOUT.warmup_metrics,
) -> None:
    """Teach the ID generator to write a keyword phrase of each item's own text; save its checkpoint."""
    from idgenrec import stages
    from idgenrec.backbone import BackboneUnavailableError

    config = read_params(params)
    try:
        result = stages.warm_up(config, LAYOUT.with_paths(prepared=prepared, generator=output, warmup_metrics=metrics))
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    typer.echo(f"generator -> {output}: loss {result['first_loss']:.3f} -> {result['final_loss']:.3f} in {result['seconds']:.0f}s")


@app.command("generate")
def generate(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = LAYOUT.prepared,
    generator: Annotated[Path, typer.Option(help="Warmed-up (or trained) ID generator checkpoint.")] = LAYOUT.generator,
    output: Annotated[Path, typer.Option(help=f"Folder to write {TABLE_FILE} into.")] = LAYOUT.ids,
    metrics: Annotated[Path, typer.Option(help="ID-quality metrics JSON to write.")] = LAYOUT.ids_metrics,
) -> None:
    """Give every item a unique textual ID (ids.kind: learned, title or random) and measure their quality."""
    from idgenrec import stages
    from idgenrec.backbone import BackboneUnavailableError

    config = read_params(params)
    files = LAYOUT.with_paths(prepared=prepared, generator=generator, ids=output, id_table=output / TABLE_FILE, ids_metrics=metrics)
    try:
        quality = stages.generate_ids(config, files)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    typer.echo(
        f"{quality['items']} {config.ids.kind} IDs -> {output / TABLE_FILE}: unique {quality['unique_ratio']:.3f}, "
        f"mean {quality['mean_words']:.2f} words, own words {quality['own_word_fraction']:.1%}"
    )


@app.command("show")
def show(
    item: Annotated[str, typer.Argument(help="Original item id (e.g. 1 = Toy Story on ML-100k).")],
    prepared: PreparedOption = LAYOUT.prepared,
    ids: Annotated[Path, typer.Option("--ids", help="ID table.")] = LAYOUT.id_table,
) -> None:
    """Print an item's original id, its text and its textual ID."""
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.ids import ItemIdTable

    try:
        dataset = SequenceDataset.load(prepared)
        table = ItemIdTable.load(ids)
        table.check_aligned(dataset)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    index = dataset.item_index().get(item)
    if index is None:
        fail(f"item {item!r} is not in {prepared} (it may have been removed by the k-core filter)")
    typer.echo(f"item:  {item}")
    typer.echo(f"title: {dataset.item_titles[index]}")
    typer.echo(f"text:  {dataset.item_texts[index]}")
    typer.echo(f"id:    {table.textual_ids[index]}")
