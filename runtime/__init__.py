"""The inference runtime: tokenizer and chat template, KV-reusing session, sampling, drafts, grammars, backends.

Depends on `model/` (the PLT) and on nothing above it.
"""
