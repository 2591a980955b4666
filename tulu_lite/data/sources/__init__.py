"""Converters from the raw TÜLU source releases to the conversation format, in two styles.

Each source is read the way its authors release it (JSON Lines, one big JSON array, the natural-instructions
folder, OpenAssistant message trees) and streamed: JSON Lines line by line, JSON arrays element by element, so a
multi-GB download never sits in memory. Every output line is ``{"dataset": SOURCE, "id": ..., "messages": [...]}``.

``--style v1`` (the default) is TÜLU v1 as open-instruct built it at commit e44fcf588 (`reformat_datasets.py`,
`instruction_encode_templates.py`, `scripts/split_sharegpt_conversations.py`): the same records kept and dropped,
the same roles, contents and ids, super_ni from the xlingual task list, oasst1 with every root-to-assistant path,
sharegpt split and filtered as FastChat's script did. Its randomness (template choice, super_ni and CoT sampling)
came from Python's `random` seeded once with ``--seed`` (42); here one `random.Random(seed)` per conversion makes
the same calls in the same order, so the output equals the reference's when it is run on a raw folder holding
only that source (run over several sources, the reference shares one generator in `os.listdir` order).

``--style clean`` is tulu-lite's own conversion: templates from its own set picked by a hash of (seed, id) (so a
subsample keeps each example's prompt), empty instructions and outputs dropped, ShareGPT roles mapped and the turn
order repaired instead of whole conversations dropped, oasst1 maximal paths only, super_ni from the English
``splits/default`` list.

Either way the output is deterministic for a seed; ``max_examples`` keeps a bottom-k sample on a seeded hash of the
ids, so a smaller sample is a subset of a larger one.

The modules, in the order a record flows through them:
- `table`: the twelve sources, one `Source` row each (release, file globs, fields, a converter per style);
- `pipeline`: options checked, raw files found and streamed, records converted, sampled, written and reported;
- `clean`, `v1`: the two families of converters, one function per record shape; `super_ni`: the folder reader
  (both styles);
- `conversion`: what they share (options, report, the running state, the field check, the output record).

Adding a source: a row in `table.SOURCES` and a converter in `clean` and in `v1`. Preference pairs (Anthropic
HH-RLHF, for preference tuning) are not conversations: their family is `preferences` (converters), their rows
`table.PAIR_SOURCES`, and `pipeline.convert_pairs` writes chosen/rejected pair records checked as training reads
them; `convert` takes either kind of source name.
"""

from tulu_lite.data.sources.conversion import STYLES, ConvertOptions, ConvertReport
from tulu_lite.data.sources.pipeline import (
    convert,
    convert_pairs,
    input_files,
    iter_converted,
    iter_pairs,
    meta_path,
    raw_inputs,
    report_table,
    sample_examples,
    total_input_size,
)
from tulu_lite.data.sources.table import PAIR_SOURCES, SOURCES, get_source

__all__ = ["PAIR_SOURCES", "SOURCES", "STYLES", "ConvertOptions", "ConvertReport", "convert", "convert_pairs",
           "get_source", "input_files", "iter_converted", "iter_pairs", "meta_path", "raw_inputs", "report_table",
           "sample_examples", "total_input_size"]
