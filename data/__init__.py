"""Corpus preparation (prepare.py), the tokenizer (tokenizer.py) and the token files + MLM batches (loader.py)."""
