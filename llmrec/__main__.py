"""`python -m llmrec` runs the CLI."""

from llmrec.cli import main

main()
