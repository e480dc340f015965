import pytest

from seal.domains.knowledge import DataError, load_passages
from seal.grading import verdict
from seal.grading.check import Judged, agreement, calibration_rows, load_judged, split
from seal.grading.verdict import FEATURES, VerdictModel, canonical_tokens, features, fit, main_answer


@pytest.mark.parametrize(
    "a, b",
    [
        ("fifty", "50"),
        ("the nineteenth century", "19th century"),
        ("10,000 people", "10000 people"),
        ("Æthelred", "aethelred"),
        ("25 percent", "25%"),
        ("Britain", "United Kingdom"),
        ("shrinking budgets", "shrink budget"),
        ("Super Bowl XXXIII", "Super Bowl 33"),
        ("twenty-five", "25"),
        ("95–55 BCE", "95 - 55 BC"),
        ("$3.5 million", "3.5 million"),
    ],
)
def test_canonical_tokens_unify_numbers_units_and_forms(a, b):
    assert canonical_tokens(a) == canonical_tokens(b)


def test_canonical_tokens_keep_numbers_apart():
    assert canonical_tokens("1918–1938") == ("1918", "1938")
    assert canonical_tokens("3.5") != canonical_tokens("35")
    assert canonical_tokens("I did it") == ("i", "did", "it")  # not Roman numerals
    assert canonical_tokens("twenty half") == ("20", "0.5")
    assert len(features("Who?", "Denver Broncos", "The Broncos")) == len(FEATURES)


def test_month_conflict_reads_may_as_a_month_only_next_to_a_number():
    def conflict(gold, answer):
        return features("", gold, answer)[FEATURES.index("month_conflict")]

    assert conflict("October 12, 1943", "It was authorized on September 12, 1943.") == 1.0
    assert conflict("October 12, 1943", "They may have signed it on October 12, 1943.") == 0.0
    assert conflict("October 12, 1943", "They may have signed it in 1943.") == 0.0
    assert conflict("October 12, 1943", "It was signed on 12 May 1943.") == 1.0


def test_main_answer_drops_the_text_the_model_ran_into():
    assert main_answer("Paris\n\nQ: What is the capital of Spain?\nA: Madrid") == "Paris"
    assert main_answer("Paris is the capital.\nQuestion: next one") == "Paris is the capital."


@pytest.mark.parametrize(
    "gold, answer, question, expected",
    [
        # taken from the calibration data (GPT-4.1 verdicts)
        (
            "a cryptophyte",
            "The chloroplasts in the Dinophysis chloroplast nucleomorph came from a cryptophyte.",
            "",
            1.0,
        ),
        ("three", "Thomas Davis had torn his ACL three times in his career.", "", 1.0),
        ("Santa Clara University", "", "", 0.0),
        (
            "journalism",
            "Maududi was primarily a writer and then an intellectual leader in the Islamist movement.",
            "",
            0.0,
        ),
        ("fifty", "There have been over 50 studies showing a connection between inequality and violence.", "", 1.0),
        (
            "the European Parliament and the Council of the European Union",
            "The European Parliament and the Council of the European Union",
            "",
            1.0,
        ),
        ("Denver Broncos", "The Carolina Panthers won the game.", "Who won Super Bowl 50?", 0.0),
        (
            "October 12, 1943",
            "The sale of NBC Blue to Edward John Noble was authorized on September 12, 1943.",
            "",
            0.0,
        ),
        (
            "Super Bowl XXXIII",
            "John Elway won Super Bowl 33 at the age of 38.",
            "Which Super Bowl did Elway win at 38 years old?",
            1.0,
        ),
    ],
)
def test_tricky_verdicts(gold, answer, question, expected):
    assert verdict(question, gold, answer) == expected


def test_verdict_is_deterministic_and_bounded():
    args = ("What is the capital of France?", "Paris", "It is Paris.")
    assert verdict(*args) == verdict(*args) == 1.0


RELEASE_JUDGED = [
    "eval/naive.json",
    "train/rank_iter0.json",
    "cpt/cpt_base.json",
    "cpt/cpt_naive.json",
    "cpt/cpt_gpt4_1.json",
    "cpt/cpt_iter2.json",
]


def release_calibration(shared_data):
    """base.json split by passage, and every other judged file of the SEAL release (docs/grading.md: the refit)."""
    results = shared_data / "reference-results"
    evaluated = load_passages(shared_data / "squad" / "synthetic" / "eval" / "base_val.json")
    train, held_out = split(load_judged(results / "eval" / "base.json"))
    more = [row for name in RELEASE_JUDGED for row in load_judged(results / name, evaluated)]
    return train, held_out, more


def test_shipped_weights_are_the_fit_on_the_calibration_rows_and_beat_containment_on_held_out(shared_data):
    train, held_out, more = release_calibration(shared_data)
    assert len(train) + len(held_out) == 1948
    rows = calibration_rows(train, held_out, more)
    refit, shipped = fit(rows), VerdictModel.load()
    assert refit.weights == pytest.approx(shipped.weights, abs=1e-6)
    model, _ = agreement(held_out, lambda q, g, a: shipped.probability(q, g, a) >= shipped.threshold)
    contains, _ = agreement(held_out, lambda q, g, a: g.lower() in a.lower())
    always_no, _ = agreement(held_out, lambda q, g, a: False)
    base_only = fit(train)
    trained_on_base, _ = agreement(held_out, lambda q, g, a: base_only.probability(q, g, a) >= base_only.threshold)
    assert always_no.accuracy == pytest.approx(0.634, abs=0.01)
    assert model.accuracy >= 0.89 and model.accuracy > contains.accuracy and model.accuracy > trained_on_base.accuracy
    assert model.kappa > 0.75


def test_calibration_rows_never_touch_the_held_out_part(shared_data):
    train, held_out, more = release_calibration(shared_data)
    rows = calibration_rows(train, held_out, more)
    assert len(rows) > 5 * len(train)
    assert not {r.group for r in rows} & {r.group for r in held_out}
    assert not {r.question for r in rows} & {r.question for r in held_out}
    assert len({(r.question, r.gold, r.answer.strip()) for r in rows}) == len(rows)


def test_repeated_answers_take_the_majority_verdict():
    def row(answer, verdict, group="p", question="Who won?"):
        return Judged(question, "Denver Broncos", answer, verdict, group)

    held_out = [row("x", True, group="held", question="Where?")]
    more = [row("Denver", False), row("Denver ", True), row("Denver", True), row("the Broncos", False),
            row("y", True, group="held"), row("z", True, question="Where?")]  # fmt: skip
    rows = calibration_rows([row("Broncos", True)], held_out, more)
    assert {(r.answer.strip(), r.verdict) for r in rows} == {
        ("Broncos", True),
        ("Denver", True),
        ("the Broncos", False),
    }


def test_a_cpt_result_reads_its_questions_from_the_evaluated_passages(shared_data):
    cpt = shared_data / "reference-results" / "cpt" / "cpt_base.json"
    with pytest.raises(DataError, match="give the evaluated passages"):
        load_judged(cpt)
    passages = load_passages(shared_data / "squad" / "synthetic" / "eval" / "base_val.json")
    with pytest.raises(DataError, match="974 answers, but the passages given hold"):
        load_judged(cpt, passages[:10])
    rows = load_judged(cpt, passages)
    assert len(rows) == 2 * 974
    base = {
        (r.question, r.answer.strip()) for r in load_judged(shared_data / "reference-results" / "eval" / "base.json")
    }
    # the unadapted model answers greedily: most baseline answers repeat base.json's for the same question
    assert sum((r.question, r.answer.strip()) in base for r in rows[::2]) > 0.7 * 974


def test_held_out_split_is_by_passage(shared_data):
    rows = load_judged(shared_data / "reference-results" / "eval" / "base.json")
    train, held_out = split(rows)
    assert not {r.group for r in train} & {r.group for r in held_out}
    assert 0.25 < len(held_out) / len(rows) < 0.35
