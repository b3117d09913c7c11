"""
Experiments: the commands that reproduce and measure the methods, apart from the methods themselves.

One file per study, each one documented command run from the repository root, e.g.
`python -m experiments.grow_bench --help` (python -m puts the root on sys.path, so `from train import train`
works). The methods (model.py, train.py, grow.py, scaling.py, policy.py) and run/ never import from here.
"""
