"""Jobs: what a user asks dreamsr to do, built from the parts and the base below them. They form a stack, each
using only those under it: ``bench`` -> ``train`` / ``evaluate`` -> ``pipeline`` -> ``weights``.

- :mod:`dreamsr.jobs.pipeline`: ``Upscaler``, network + process + tiling -> an image;
- :mod:`dreamsr.jobs.train`: DREAM training of every family (resume, DDP, EMA, validation, export);
- :mod:`dreamsr.jobs.evaluate`: metrics over a set, reports;
- :mod:`dreamsr.jobs.bench`: timings of the real code paths;
- :mod:`dreamsr.jobs.weights`: the ``weights.toml`` registry, Hub downloads, converters' entry points.
"""
