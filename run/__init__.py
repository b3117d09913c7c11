"""
The plumbing of a training run, which a user never runs directly: the run's settings and flags (config.py), the
corpus it needs prepared (corpus.py), the model, data and policy it starts from (build.py), the device and its
precision (device.py), measuring this machine (machine.py: micro-batch fit, compile, tokens/s), the run folder with
its lock and log (folder.py), checkpoints (checkpoint.py) and what a run prints and logs (report.py).
The loop itself is train.py; the methods (model.py, grow.py, policy.py, scaling.py) sit beside it at the top.
"""
