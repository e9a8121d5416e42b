"""
Plumbing a first read skips: checkpoints and the Hugging Face weight mapping, data conversion, the process
group, precision, flags/logging, the run log and its curves.
"""
