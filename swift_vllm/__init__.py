"""SWIFT on-the-fly self-speculative decoding as a vLLM speculative method.

The served model drafts for itself with some attention / MLP sub-layers
skipped and verifies with all of them. See README.md for usage.
"""

__version__ = "0.1.0"
