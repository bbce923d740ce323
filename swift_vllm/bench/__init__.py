"""Benchmarks of speculative methods in vLLM: offline runs, online serving runs, speed reports.

``offline`` times ``LLM.generate`` per method and batch size, ``report`` turns
its records into ``results.json`` and tables, ``plots`` draws them, ``speed``
compares two per-request answer files the way the SWIFT / Spec-Bench
``speed.py`` does, and ``online`` drives real servers with ``vllm bench serve``.
"""
