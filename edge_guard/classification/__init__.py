"""The classify path: one policy (or several) and texts in, `ClassificationResult`s out.

- `classifier`: `Classifier`, the one object every door (API, CLI, TUI, service, runs) uses.
- `lane`: `Lane`, what the steps below, the runs and the service use of a classifier (a
  typed protocol `Classifier` implements), and `RunItem`.
- `request`: a (text, policy) item turned into the engine's `GenerationRequest` (prompt ids,
  sampling, truncation), and why an item cannot be sent.
- `truncation`: text checks and fitting an item into the context, context messages first.
- `loop`: the shared submit/collect loop over (text, policy) pairs.
- `onepass`: one-pass scoring (a label from the first answer token's distribution).
- `cascade`: one pass first, full reasoning only for the uncertain.
- `keys`: the cache key: everything that changes the output, nothing else.
"""
