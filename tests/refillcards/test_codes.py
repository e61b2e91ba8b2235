"""Codes: alphabet, entropy, check character, normalisation, storage at rest."""

import itertools

import pytest

from refillcards import codes


def test_a_code_is_prefix_16_random_characters_and_a_check_character():
    code = codes.new_code("NW")
    assert code.startswith("NW") and len(code) == 2 + 16 + 1
    assert set(code) <= set(codes.ALPHABET)
    assert not set("ILOU") & set(code)
    assert codes.normalise(code) == code


def test_typing_is_forgiving_case_spaces_dashes_and_look_alikes():
    code = codes.new_code("")
    shown = codes.display(code, "")
    assert shown.count("-") == 3
    assert codes.normalise(shown.lower()) == code
    assert codes.normalise(" ".join(code)) == code
    zeros = code.replace("0", "O").replace("1", "l")
    assert codes.normalise(zeros) == code


def test_every_single_typo_and_every_neighbour_swap_is_caught_before_any_lookup():
    code = codes.new_code("AB")
    for i, ch in enumerate(code):
        for other in codes.ALPHABET:
            if other != ch:
                typo = code[:i] + other + code[i + 1 :]
                with pytest.raises(codes.MalformedCode):
                    codes.normalise(typo)
    for i in range(len(code) - 1):
        if code[i] != code[i + 1]:
            swapped = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
            with pytest.raises(codes.MalformedCode):
                codes.normalise(swapped)


@pytest.mark.parametrize(
    "typed",
    ["", "x" * 65, "\x00" * 20, "ABCD\x00EFGH1234JKMNP", "€" * 20, "\ud800" * 18, "A" * 17, "12"],
)
def test_garbage_is_not_a_code(typed):
    with pytest.raises(codes.MalformedCode):
        codes.normalise(typed)


def test_prefix_rules_say_what_to_fix():
    assert codes.validate_prefix(" nw7 ") == "NW7"
    with pytest.raises(codes.MalformedCode, match="except I, L, O and U"):
        codes.validate_prefix("GOLD")
    with pytest.raises(codes.MalformedCode, match="at most 8"):
        codes.validate_prefix("A" * 9)


def test_at_rest_the_code_is_a_keyed_hash_and_a_fernet_token(settings):
    code = codes.new_code("NW")
    token = codes.encrypt(code)
    assert code not in token and codes.decrypt(token) == code
    digest = codes.lookup_hash(code)
    assert len(digest) == 32 and digest == codes.lookup_hash(code)
    settings.REFILL_CARD_LOOKUP_KEY = "another key"
    codes.reset_keys()
    try:
        assert codes.lookup_hash(code) != digest
    finally:
        codes.reset_keys()


def test_codes_do_not_repeat():
    made = {codes.new_code("") for _ in range(20000)}
    assert len(made) == 20000
    # every position uses the whole alphabet (no stuck bits in the encoding)
    for position in range(16):
        assert len({c[position] for c in itertools.islice(made, 3000)}) == 32
