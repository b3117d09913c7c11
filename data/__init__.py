"""Reading a corpus (corpus.py) and preparing it (prepare.py), the tokenizer (tokenizer.py) and the token files +
MLM batches (loader.py)."""
