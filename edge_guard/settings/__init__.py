"""Settings: what a request may set, and how a value is checked and resolved.

- `values`: one setting's value checked and converted, named in each door's terms
  (`--seed -1`, `seed=-1`, field `seed`); the reasoning modes and cascade bounds. A low
  layer: the backends and the classify path use it.
- `keep_alive`: how long a warm engine stays loaded after its last request.
- `resolve`: `Settings` and `resolve_settings` (flag > environment > config.toml), above the
  backends (it builds their engine settings).
"""
