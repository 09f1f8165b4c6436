"""CLI command modules, one per stage; `llmrec.cli` registers them.

They import heavy libraries (torch, dgl, transformers) inside the command
functions so `llmrec --help` stays fast.
"""
