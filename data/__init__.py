"""
Data on disk and what reads it: corpora and where they come from (fetch.py, sources.py), our BPE trainer (bpe.py)
and the tokenizer (tokenizer.py), preparing a corpus into token files (prepare.py), the token files and the masked
batches a training step reads (loader.py), the GLUE and BLiMP readers (glue.py, blimp.py), and writing a file whole
or not at all (files.py). Nothing here knows about a training run: a module here imports only other modules here.
"""
