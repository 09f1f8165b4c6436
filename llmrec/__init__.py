"""llmrec: LLM-augmented graph recommendation with local, open models."""

__version__ = "0.1.0"
