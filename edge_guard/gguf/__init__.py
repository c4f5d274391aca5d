"""Reading GGUF files, with nothing of llama.cpp: the bottom layer harmony, registry and engine share.

- `check`: the header and tensor table read and checked before llama.cpp sees the file
  (`check_model_file`), the vocabulary's tokens.
- `read`: the low-level reader of GGUF's key-value and tensor-info sections.
- `cache`: the parsed header and vocabulary cached per file identity (path, size, mtime,
  inode), so a cold start reads them once per model file.
"""
