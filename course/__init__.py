"""
The course kit: assignments a course can hand out and grade from this repository (course/README.md).

Each assignment is a handout (NN-<slug>.md) and a module of checks (aNN_<slug>.py); kit.py makes the student copy
(the assignment's functions blanked through `ast`, so the reference source stays unmarked) and grades it.
`python -m course list | start | check | measure` is the command line (__main__.py).
"""
