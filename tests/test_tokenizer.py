"""The toy tokenizer: byte-level, digits are single tokens, specials are reserved."""
from hypothesis import given, settings, strategies as st

from nanorlvr.tokenizer import ASSISTANT, USER, encode_prompt, toy_tokenizer

enc = toy_tokenizer()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trips_arbitrary_text(s):
    assert enc.decode(enc.encode_ordinary(s)) == s


def test_every_digit_is_one_token():
    assert enc.encode_ordinary("-1234567890/7") == [ord(c) for c in "-1234567890/7"]


def test_prompt_format_uses_special_tokens():
    ids = encode_prompt(enc, "(1+2)*3")
    assert ids[0] == enc.encode_single_token(USER) and ids[-1] == enc.encode_single_token(ASSISTANT)
    assert enc.decode(ids[1:-1]) == "(1+2)*3"
    assert enc.encode_ordinary("<|user|>") != [ids[0]]  # the text of a special is not the special
