"""edge_guard: offline policy classification with gpt-oss-safeguard on llama.cpp."""

__version__ = "0.1.0"
