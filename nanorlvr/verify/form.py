"""
The written form of an answer, plain string work (no sympy): is it a value, or arithmetic still to do? And is
it the question written back? Used by nanorlvr/verifier.py (the reward) and its workers.

    unevaluated("13 + 3 is odd")  -> True    the final side "13 + 3" is numbers and operators
    unevaluated("7+5=12")         -> False   the final side is a value
    plain("\\frac{16}{18}")       -> "16/18"

Why: where the gold is a number, the parser reads "7+5" (or "13 + 3 is an irrational number", trailing words
being units to it) as 12, so a reward by value pays for writing the question down instead of answering it;
a 135M policy found both within 50 GRPO steps (docs/results.md).
"""
import re

_CMD = r'\\(?:times|cdot|div|[dtc]?frac|sqrt)(?![a-zA-Z])'
# a fraction of integers (7/2, \frac{16}{18}, 918\frac{1}{2}) and scientific notation (1.5\times 10^{3}) are
# values: the toy's answers may be unreduced fractions
_VALUE = re.compile(r'\\[dtc]?frac\s*(?:\{\s*-?\d+\s*\}|\d)\s*(?:\{\s*-?\d+\s*\}|\d)|\d+\s*/\s*\d+'
                    r'|(?:\d+(?:\.\d+)?\s*(?:\\times|\\cdot|\*)\s*)?10\s*\^\s*(?:\{\s*-?\d+\s*\}|\d)')
_NUMBERS_AND_OPS = re.compile(rf'(?:[\d.\s+\-*/^(){{}}]|{_CMD})+')
_OPERATION = re.compile(rf'[+*/^]|{_CMD}|\)\s*\(|[\d)]\s*-')
_TRAILING_WORDS = re.compile(r"\s+[A-Za-z][A-Za-z\s.,;:!?'-]*$")


def final_side(s):
    """What an answer finally states: the part after its last '=', less trailing words ("x = 12" -> "12",
    "13 + 3 is an irrational number" -> "13 + 3")."""
    return _TRAILING_WORDS.sub('', s.rsplit('=', 1)[-1]).strip()


def unevaluated(s):
    """Whether answer s finally states arithmetic still to do, numbers and operators only: "7+5",
    "3\\times 4", "2^{3}", "\\sqrt{4}", "(6)(2)", "16 = 13+3"; not a value (12, 16/18, 1.5\\times 10^{3})."""
    s = _VALUE.sub('1', final_side(s))
    return bool(_NUMBERS_AND_OPS.fullmatch(s) and _OPERATION.search(s))


def plain(s):
    """s for comparing with a question: no spacing, no $, \\frac{a}{b} written a/b, no trailing ?.="""
    s = re.sub(r'\\[dtc]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}', r'\1/\2', s)
    return re.sub(r'[\s$]', '', s).rstrip('?.=')
