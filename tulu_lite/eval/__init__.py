"""The shared evaluation routines (`tulu-lite eval`): TÜLU's benchmark suite for any HF causal LM directory.

`runner.evaluate(settings)` runs tasks, `runner.rescore(settings, file)` re-scores saved predictions and
`compare.compare(out_dirs)` puts several models side by side. `settings.protocol` chooses how tasks run and are
scored: "tulu-v1" as the TÜLU paper did (open-instruct at 36bc72800), "tulu-lite" tulu-lite's own variant. The
scorers (`scoring`, `execution`) and the subset draws (`subsets`) need no model; `resume` keeps interrupted runs.
Every task module satisfies `task.EvalTask` (load, predict, score, headline, ...): the runner's table lists them.
"""
