"""`idgenrec ids ...`: warm up the ID generator, generate the ID table, show an item's ID."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idgenrec.cli.common import DEFAULT_PARAMS, ParamsOption, fail, read_params

app = typer.Typer(no_args_is_help=True)

PreparedOption = Annotated[Path, typer.Option("--prepared", help="Prepared dataset folder.")]
DEFAULT_PREPARED = Path("artifacts/prepared")
DEFAULT_GENERATOR = Path("artifacts/generator")
DEFAULT_IDS = Path("artifacts/ids")
TABLE_FILE = "item_ids.tsv"


@app.command("warmup")
def warmup(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = DEFAULT_PREPARED,
    output: Annotated[Path, typer.Option(help="Checkpoint folder to write.")] = DEFAULT_GENERATOR,
    metrics: Annotated[Path, typer.Option(help="Warm-up metrics JSON to write.")] = Path("metrics/warmup.json"),
) -> None:
    """Teach the ID generator to write a keyword phrase of each item's own text; save its checkpoint."""
    from idgenrec.atomic import write_json
    from idgenrec.backbone import BackboneUnavailableError
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.ids import warm_up_generator

    config = read_params(params)
    try:
        dataset = SequenceDataset.load(prepared)
        result = warm_up_generator(dataset, config, output)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    write_json(metrics, result)
    typer.echo(f"generator -> {output}: loss {result['first_loss']:.3f} -> {result['final_loss']:.3f} in {result['seconds']:.0f}s")


@app.command("generate")
def generate(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = DEFAULT_PREPARED,
    generator: Annotated[Path, typer.Option(help="Warmed-up (or trained) ID generator checkpoint.")] = DEFAULT_GENERATOR,
    output: Annotated[Path, typer.Option(help=f"Folder to write {TABLE_FILE} into.")] = DEFAULT_IDS,
    metrics: Annotated[Path, typer.Option(help="ID-quality metrics JSON to write.")] = Path("metrics/ids.json"),
) -> None:
    """Give every item a unique textual ID (ids.kind: learned, title or random) and measure their quality."""
    from idgenrec.atomic import write_json
    from idgenrec.backbone import BackboneUnavailableError, build_tokenizer, load_seq2seq, vocabulary_corpus
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.ids import make_id_table

    config = read_params(params)
    try:
        dataset = SequenceDataset.load(prepared)
        if config.ids.kind == "learned":
            model, tokenizer = load_seq2seq(generator)
        else:
            model, tokenizer = None, build_tokenizer(config.backbone, vocabulary_corpus(dataset))
        table, quality = make_id_table(config.ids.kind, dataset, model, tokenizer, config.ids)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    table.save(output / TABLE_FILE, tokenizer)
    write_json(metrics, quality)
    typer.echo(
        f"{quality['items']} {config.ids.kind} IDs -> {output / TABLE_FILE}: unique {quality['unique_ratio']:.3f}, "
        f"mean {quality['mean_words']:.2f} words, own words {quality['own_word_fraction']:.1%}"
    )


@app.command("show")
def show(
    item: Annotated[str, typer.Argument(help="Original item id (e.g. 1 = Toy Story on ML-100k).")],
    prepared: PreparedOption = DEFAULT_PREPARED,
    ids: Annotated[Path, typer.Option("--ids", help="ID table.")] = DEFAULT_IDS / TABLE_FILE,
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
