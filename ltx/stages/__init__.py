"""The four stages of a run (`ltx.pipeline` calls them in order), one module each, plus what they share:

- `blackbox`: the explained models, loaded or trained once and cached;
- `pretrain`: one explainer per backbone and class mode (LTX's first stage);
- `explain`: the maps of every method through `trainer.predict` (LTX's second stage included);
- `evaluate`: the `eval` suite on every saved map set, results and report;
- `checks`: what the config asks for, refused before any work when a run cannot give it;
- `runtime`: Trainers, loggers, loaders, per-stage seeds, the processes (DDP).
"""
