import pytest

from ia2.errors import IA2Error
from ia2.tasks.parsers import PARSERS, answers_match, boxed_contents, parse_answer


def test_registry_names():
    assert set(PARSERS) >= {"gsm8k", "math", "sciq"}
    with pytest.raises(IA2Error, match="unknown answer parser"):
        parse_answer("nope", "1")
    with pytest.raises(IA2Error):
        answers_match("nope", "1", "1")


@pytest.mark.parametrize("text,expected", [
    ("She has 3 apples and buys 4 more.\n#### 7", "7"),
    ("First 10 then 20.\n#### 1,000", "1000"),
    ("#### $1,234.50", "1234.5"),
    ("#### -5", "-5"),
    ("#### 12.0", "12"),
    ("so x = 3 and 4 \\boxed{42} done", "42"),
    ("\\boxed{1} then \\boxed{2}", "1"),  # the answer given first
    ("x\n#### 4\nQuestion: y\nAnswer: z\n#### 9", "4"),  # not an invented follow-up's
    ("The answer is $18.", "18"),
    ("I think the answer is: -3.25 and not 7", "-3.25"),
    ("costs 5 dollars, then 6, total 11.", "11"),
    ("a loss of -7", "-7"),
    ("he paid $2,500 for it", "2500"),
    ("counts 1,2,3", "3"),  # a list, not a thousands separator
    ("half is .5", "0.5"),
    ("no numbers here", None),
    ("", None),
    ("#### ", None),
])
def test_gsm8k_parse(text, expected):
    assert parse_answer("gsm8k", text) == expected


def test_gsm8k_hashes_win_over_later_numbers_in_the_same_line():
    assert parse_answer("gsm8k", "#### 8 apples, 9 pears") == "8"


@pytest.mark.parametrize("pred,gold,same", [
    ("12.0", "12", True),
    ("1,000", "1000", True),
    ("$5", "5", True),
    ("12.50", "12.5", True),
    ("-0", "0", True),
    ("12.01", "12", False),
    ("-5", "5", False),
    (None, "5", False),
])
def test_gsm8k_match(pred, gold, same):
    assert answers_match("gsm8k", pred, gold) is same


def test_boxed_nested_and_variants():
    assert boxed_contents(r"\boxed{\frac{1}{2}}") == [r"\frac{1}{2}"]
    assert boxed_contents(r"a \boxed{x^{2}} b \fbox{3}") == ["x^{2}", "3"]
    assert boxed_contents(r"\boxed 5$") == ["5"]
    assert boxed_contents(r"\boxed{unclosed {") == []


@pytest.mark.parametrize("text,expected", [
    (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}"),
    (r"\boxed{\tfrac{3}{4}}", r"\frac{3}{4}"),
    (r"first \boxed{\left( 2, 3 \right)}, then \boxed{1}", "(2,3)"),  # the answer given first
    (r"\boxed{90^\circ}", "90"),
    (r"\boxed{90^{\circ}}", "90"),
    (r"\boxed{\$ 5.}", "5"),
    (r"\boxed{10\!000}", "10000"),
    (r"\boxed 7", "7"),
    (r"\fbox{x+1}", "x+1"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),
    (r"\boxed{x = 5}", "5"),
    (r"\boxed{-\frac12}", r"-\frac{1}{2}"),
    (r"\boxed{3/4}", r"\frac{3}{4}"),
    (r"\boxed{\text{(A)}}", "(A)"),
    ("the answer is 5", None),
])
def test_math_parse(text, expected):
    assert parse_answer("math", text) == expected


@pytest.mark.parametrize("pred,gold,same", [
    (r"\frac{1}{2}", r"\dfrac{1}{2}", True),
    (r"\frac12", r"\frac{1}{2}", True),
    (r"(2,3)", r"\left( 2, 3 \right)", True),
    (r"\sqrt2", r"\sqrt{2}", True),
    ("0.5", r"\frac{1}{2}", False),  # documented: no numeric equivalence for MATH
    ("x+1", "1+x", False),
    (None, "1", False),
])
def test_math_match(pred, gold, same):
    assert answers_match("math", pred, gold) is same


def test_math_gold_with_boxed_solution():
    solution = r"We get $x=\boxed{\dfrac{5}{2}}$."
    assert answers_match("math", parse_answer("math", r"\boxed{\frac{5}{2}}"), solution)


@pytest.mark.parametrize("text,expected", [
    ("Plants need light.\n#### Photosynthesis!", "photosynthesis"),
    ("#### (B) The Mantle.", "b the mantle"),
    ("#### a\n#### C", "a"),  # the answer given first
    ("####   Kinetic   energy  \nmore text", "kinetic energy"),
    ("no marker", None),
    ("#### ...", None),
])
def test_sciq_parse(text, expected):
    assert parse_answer("sciq", text) == expected


def test_sciq_match():
    assert answers_match("sciq", parse_answer("sciq", "#### Mitochondria."), "mitochondria")
    assert not answers_match("sciq", parse_answer("sciq", "#### ribosome"), "mitochondria")
