"""The conversion pipeline: find a source's raw files (plain or gzipped), stream their records through the style's
converter, sample, write the conversation JSON Lines atomically with a ``*.meta.json`` of the settings, and report
what happened. Preference-pair sources (`table.PAIR_SOURCES`) go the same way to their own output, pair records
checked with `tulu_lite.data.pairs`'s row checks (`convert_pairs`); `convert` takes either kind of name.
"""

from __future__ import annotations

import heapq
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from tulu_lite.data.conversations import check_output
from tulu_lite.data.raw import RawRecord, read_json_values, read_sampled
from tulu_lite.data.sources import super_ni
from tulu_lite.data.sources.conversion import (
    STYLES,
    ConvertOptions,
    ConvertReport,
    Run,
    Source,
    check_fields,
    emit,
)
from tulu_lite.data.sources.preferences import PairSource
from tulu_lite.data.sources.table import (
    PAIR_SOURCES,
    SOURCES,
    get_pair_source,
    get_source,
)
from tulu_lite.data.templates import seeded_unit
from tulu_lite.errors import TuluError
from tulu_lite.json_files import write_json, write_jsonl


def input_files(source: Source, raw_path: str | os.PathLike, options: ConvertOptions = ConvertOptions()) -> list[Path]:
    """The raw files to read: RAW_PATH itself, or the files of the directory that the source reads.

    In v1 a source with `v1_files` reads exactly those names, in the reference's order (ShareGPT: the split file,
    or with a tokenizer the two raw parts the reference split, so a folder holding all three is read once);
    otherwise the first glob of `patterns` that matches, sorted. Each name may also be found gzipped (``NAME.gz``, as
    oasst1's trees are released), read only when the folder doesn't hold it plain.
    """
    style = options.style
    path = Path(raw_path)
    if not path.exists():
        raise TuluError(f"{path}: not found (expected {source.expected})")
    if path.is_file():
        return [path]
    names = source.v1_split_files if options.split_budget is not None and source.v1_split_files else source.v1_files
    if style == "v1" and names:
        present = [found for name in names if (found := _plain_or_gzipped(path, name)) is not None]
        if present:
            return present
    for pattern in source.patterns:
        matches = _glob_plain_or_gzipped(path, pattern)
        if matches:
            return matches
    raise TuluError(f"{path}: no file matching {' or '.join(source.patterns)}, plain or .gz "
                    f"(expected {source.expected})")


def _plain_or_gzipped(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _glob_plain_or_gzipped(folder: Path, pattern: str) -> list[Path]:
    """The files matching `pattern` or ``pattern.gz``, sorted by their plain names; a file present both ways is read
    plain, once."""
    plain = {candidate.name: candidate for candidate in folder.glob(pattern) if candidate.is_file()}
    gzipped = {candidate.name.removesuffix(".gz"): candidate for candidate in folder.glob(f"{pattern}.gz")
               if candidate.is_file()}
    found = gzipped | plain
    return [found[name] for name in sorted(found)]


_V1_ONLY = {"cot_zero_shot", "cot_few_shot"}


def _check_options(source: Source, options: ConvertOptions) -> None:
    if options.style not in STYLES:
        raise TuluError(f"--style must be one of {', '.join(STYLES)}, got {options.style!r}")
    defaults = ConvertOptions()
    for option in fields(ConvertOptions):
        owners = [s.name for s in SOURCES.values() if option.name in s.options]
        changed = getattr(options, option.name) != getattr(defaults, option.name)
        flag = "--" + option.name.replace("_", "-")
        if owners and changed and source.name not in owners:
            raise TuluError(f"{flag} only applies to source {' / '.join(owners)}, not {source.name!r}")
        if option.name in _V1_ONLY and changed and options.style != "v1":
            raise TuluError(f"{flag} only applies with --style v1 (clean converts each CoT file whole)")
    for name in ("max_examples", "top_k_reply"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise TuluError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("zero_shot_per_task", "few_shot_per_task", "n_few_shot", "cot_zero_shot", "cot_few_shot"):
        if getattr(options, name) < 0:
            raise TuluError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(options, name)}")
    if options.split_max_tokens is not None and options.tokenizer is None:
        raise TuluError("--split-max-tokens needs --tokenizer DIR (the tokenizer whose tokens are counted)")
    if options.split_max_tokens is not None and options.split_max_tokens < 16:
        raise TuluError(f"--split-max-tokens must be at least 16, got {options.split_max_tokens}")


def _token_counter(tokenizer_dir: str, *, with_special_tokens: bool) -> Callable[[list[str]], list[int]]:
    from tulu_lite.tokenizer import (
        load_tokenizer,  # transformers is slow to import; only sharegpt splits need it
    )

    tokenizer = load_tokenizer(tokenizer_dir)

    def count(texts: list[str]) -> list[int]:
        encoded = tokenizer(texts, add_special_tokens=with_special_tokens, return_attention_mask=False)
        return [len(ids) for ids in encoded["input_ids"]]

    return count


def _raw_records(path: Path, run: Run, chunk_size: int, on_progress) -> Iterator[RawRecord]:
    """A raw file's records; v1's CoT draws its 50k + 50k sample first, as the reference did."""
    if run.v1 and run.source.name == "cot":
        few_shot = run.options.cot_few_shot
        if few_shot == 0:  # the reference reads cot_zsopt only `if num_few_shot_examples > 0` (its typo), so neither
            return iter(())
        cap = few_shot if "fsopt" in path.name else run.options.cot_zero_shot
        return read_sampled(path, run.source.expected, cap, run.rng, on_bytes=on_progress)
    return read_json_values(path, run.source.expected, chunk_size=chunk_size, on_bytes=on_progress)


def iter_converted(source_name: str, raw_path: str | os.PathLike, options: ConvertOptions = ConvertOptions(), *,
                   report: ConvertReport | None = None, chunk_size: int = 1 << 20,
                   on_progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Stream every converted record of a raw release, in file order (no ``max_examples`` sampling).

    `on_progress` receives bytes read from the files as stored (compressed ones for ``.gz``; tasks done for
    super_ni); `report` is filled in as records go by.
    """
    source = get_source(source_name)
    _check_options(source, options)
    report = report if report is not None else ConvertReport(source.name, [])
    report.style = options.style
    run = Run(source, options, report, rng=random.Random(options.seed))
    if source.convert is None:  # super_ni reads a folder of task files
        root = Path(raw_path)
        if not root.is_dir():
            raise TuluError(f"{root}: expected the natural-instructions folder for source 'super_ni'")
        report.inputs = [str(root)]
        yield from super_ni.convert_folder(root, run, on_progress)
        return
    files = input_files(source, raw_path, options)
    report.inputs = [str(path) for path in files]
    if options.split_budget is not None:
        run.count_tokens = _token_counter(options.tokenizer, with_special_tokens=run.v1)
    convert_record = source.convert_v1 if run.v1 else source.convert
    for path in files:
        run.file_stem = path.name.split(".")[0]
        for raw in _raw_records(path, run, chunk_size, on_progress):
            check_fields(raw.value, source.fields, raw, source)
            report.records_read += 1
            for example_id, messages in convert_record(raw, run):
                record = emit(run, example_id, messages, raw.where)
                if record is not None:
                    yield record


def sample_examples(records: Iterator[dict], max_examples: int, seed: int, report: ConvertReport) -> Iterator[dict]:
    """Keep `max_examples` records by bottom-k on a seeded hash of their ids, in their original order.

    Memory holds at most `max_examples` records; the sample for k is a subset of the sample for k' > k.
    """
    heap: list[tuple[float, int, dict]] = []  # max-heap via negated keys: the k smallest keys survive
    seen = 0
    for order, record in enumerate(records):
        seen += 1
        key = -seeded_unit(seed, "sample", record["id"])
        if len(heap) < max_examples:
            heapq.heappush(heap, (key, -order, record))
        elif key > heap[0][0]:
            heapq.heapreplace(heap, (key, -order, record))
    report.sampled_out = seen - len(heap)
    for _, _, record in sorted(heap, key=lambda item: -item[1]):
        yield record


def meta_path(out: str | os.PathLike) -> Path:
    """Where the resolved settings of an output file go: ``x.jsonl`` -> ``x.meta.json``."""
    return Path(out).with_suffix(".meta.json")


def raw_inputs(source_name: str, raw_path: str | os.PathLike, options: ConvertOptions = ConvertOptions()) -> list[Path]:
    """What a conversion reads: the raw files, or the natural-instructions folder for super_ni."""
    if source_name in PAIR_SOURCES:
        return pair_input_files(PAIR_SOURCES[source_name], raw_path)
    source = get_source(source_name)
    if source.convert is None:
        return [Path(raw_path)]
    return input_files(source, raw_path, options)


def convert(source_name: str, raw_path: str | os.PathLike, out: str | os.PathLike,
            options: ConvertOptions = ConvertOptions(), *, force: bool = False, chunk_size: int = 1 << 20,
            on_progress: Callable[[int], None] | None = None) -> ConvertReport:
    """Convert a raw release into a conversation JSONL file (atomic) plus ``*.meta.json`` with the settings.

    Refused before reading anything: an output that is one of the raw inputs, and an existing output without
    `force`. A preference-pair source writes pairs instead (`convert_pairs`).
    """
    if source_name in PAIR_SOURCES:
        return convert_pairs(source_name, raw_path, out, options, force=force, chunk_size=chunk_size,
                             on_progress=on_progress)
    _check_options(get_source(source_name), options)
    check_output(out, raw_inputs(source_name, raw_path, options), force=force, sidecars=[meta_path(out)])
    report = ConvertReport(get_source(source_name).name, [])
    records = iter_converted(source_name, raw_path, options, report=report, chunk_size=chunk_size,
                            on_progress=on_progress)
    if options.max_examples is not None:
        records = sample_examples(records, options.max_examples, options.seed, report)
    report.written = write_jsonl(records, out)
    write_json(meta_path(out), {"command": "convert", "source": report.source, "raw_path": str(raw_path),
                                "options": asdict(options), "report": report.to_json()})
    return report


def total_input_size(source_name: str, raw_path: str | os.PathLike, options: ConvertOptions = ConvertOptions()) -> int:
    """Bytes to read (tasks for super_ni), for a progress bar."""
    if source_name in PAIR_SOURCES:
        return sum(path.stat().st_size for path in pair_input_files(PAIR_SOURCES[source_name], raw_path))
    source = get_source(source_name)
    if source.convert is None:
        return super_ni.task_count(Path(raw_path), options.style)
    return sum(path.stat().st_size for path in input_files(source, raw_path, options))


def report_table(report: ConvertReport, out: str | os.PathLike) -> Table:
    """A rich table of what a conversion read, wrote, skipped (pairs: dropped) and repaired."""
    pairs = report.source in PAIR_SOURCES
    style = "" if pairs else f" (--style {report.style})"
    table = Table(title=f"{report.source}{style} → {out}")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("raw records read", f"{report.records_read:,}")
    for reason, count in sorted(report.skipped.items()):
        table.add_row(f"[yellow]{'dropped' if pairs else 'skipped'}[/]: {escape(reason)}", f"{count:,}")
    for reason, count in sorted(report.repaired.items()):
        table.add_row(f"[cyan]repaired[/]: {escape(reason)}", f"{count:,}")
    if report.sampled_out:
        table.add_row("left out by --max-examples", f"{report.sampled_out:,}")
    table.add_section()
    table.add_row(f"[bold]{'pairs' if pairs else 'examples'} written[/]", f"[bold]{report.written:,}[/]")
    return table


# ---- preference pairs -----------------------------------------------------------------------------------------

_PAIR_OPTIONS = {"seed", "max_examples"}  # the ConvertOptions a pair source uses


def pair_input_files(source: PairSource, raw_path: str | os.PathLike) -> list[Path]:
    """The raw files of a pair source: RAW_PATH itself, its `files` (plain or .gz), or theirs in each sub-folder in
    name order (HH-RLHF's repository folder: every subset's train file)."""
    path = Path(raw_path)
    if not path.exists():
        raise TuluError(f"{path}: not found (expected {source.expected})")
    if path.is_file():
        return [path]
    for folders in ([path], sorted(child for child in path.iterdir() if child.is_dir())):
        found = [file for folder in folders for name in source.files
                 if (file := _plain_or_gzipped(folder, name)) is not None]
        if found:
            return found
    raise TuluError(f"{path}: no {' or '.join(source.files)}, plain or .gz, in it or its sub-folders "
                    f"(expected {source.expected})")


def _check_pair_options(source: PairSource, options: ConvertOptions) -> None:
    defaults = ConvertOptions()
    for option in fields(ConvertOptions):
        if option.name not in _PAIR_OPTIONS and getattr(options, option.name) != getattr(defaults, option.name):
            flag = "--" + option.name.replace("_", "-")
            raise TuluError(f"{flag} does not apply to preference-pair source {source.name!r} (it takes --seed and "
                            f"--max-examples)")
    if options.max_examples is not None and options.max_examples < 1:
        raise TuluError(f"--max-examples must be at least 1, got {options.max_examples}")


def iter_pairs(source_name: str, raw_path: str | os.PathLike, *, report: ConvertReport | None = None,
               chunk_size: int = 1 << 20, on_progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Stream every pair record of a raw pair release, in file order, checked with the pair row checks
    (`tulu_lite.data.pairs.to_pair`); records the converter drops are counted in ``report.skipped``."""
    from tulu_lite.data.pairs import to_pair  # transformers is slow to import
    from tulu_lite.recipe import DataSource

    columns = DataSource(path=Path("."))  # tulu-lite's own column names: chosen, rejected

    source = get_pair_source(source_name)
    report = report if report is not None else ConvertReport(source.name, [])
    report.style = ""
    files = pair_input_files(source, raw_path)
    report.inputs = [str(path) for path in files]
    for path in files:
        dataset, stem = source.dataset(path.parent.name), path.name.split(".")[0]
        for raw in read_json_values(path, source.expected, chunk_size=chunk_size, on_bytes=on_progress):
            check_fields(raw.value, source.fields, raw, source)
            report.records_read += 1
            pair, reason = source.convert(raw)
            if pair is None:
                report.skipped[reason] += 1
                continue
            record = {"dataset": dataset, "id": f"{dataset}/{stem}/{raw.index}", **pair}
            yield to_pair(record, columns, f"{raw.where} (converted by {source.name})")


def convert_pairs(source_name: str, raw_path: str | os.PathLike, out: str | os.PathLike,
                  options: ConvertOptions = ConvertOptions(), *, force: bool = False, chunk_size: int = 1 << 20,
                  on_progress: Callable[[int], None] | None = None) -> ConvertReport:
    """Convert a raw preference-pair release into a pair JSONL file (atomic) plus ``*.meta.json``, as `convert`
    does for conversations; ``max_examples`` keeps the same seeded bottom-k sample of ids."""
    source = get_pair_source(source_name)
    _check_pair_options(source, options)
    check_output(out, pair_input_files(source, raw_path), force=force, sidecars=[meta_path(out)])
    report = ConvertReport(source.name, [])
    records = iter_pairs(source.name, raw_path, report=report, chunk_size=chunk_size, on_progress=on_progress)
    if options.max_examples is not None:
        records = sample_examples(records, options.max_examples, options.seed, report)
    report.written = write_jsonl(records, out)
    write_json(meta_path(out), {"command": "convert", "source": report.source, "raw_path": str(raw_path),
                                "options": {name: getattr(options, name) for name in sorted(_PAIR_OPTIONS)},
                                "report": report.to_json()})
    return report
