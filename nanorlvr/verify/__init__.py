"""
The verifier's machinery: answer text parsed into sympy (parse), equivalence of two parsed answers (equal),
whether an answer is written as a value (form), and the time-bounded worker processes that run them
(workers). The reward itself is nanorlvr/verifier.py.
"""
