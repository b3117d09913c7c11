"""
What the evaluation commands (glue_eval.py, blimp.py) use underneath: fine-tuning an encoder on a GLUE task,
LP-FT included (finetune.py), the linear probe and the drift monitor (transfer.py), and the Kneser-Ney n-gram
baseline BLiMP is compared with (ngram.py).
"""
