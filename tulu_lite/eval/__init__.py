"""The shared evaluation routines (`tulu-lite eval`): TÜLU's benchmark suite for any HF causal LM directory.

`runner.evaluate(settings)` runs tasks, `runner.rescore(settings, file)` re-scores saved predictions and
`compare.compare(out_dirs)` puts several models side by side. The scorers (`scoring`, `execution`) need no model.
"""
