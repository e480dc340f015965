import pytest

from seal.grading import verdict
from seal.grading.check import agreement, load_judged, split
from seal.grading.verdict import VerdictModel, canonical_tokens, fit, main_answer


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
    ],
)
def test_canonical_tokens_unify_numbers_units_and_forms(a, b):
    assert canonical_tokens(a) == canonical_tokens(b)


def test_main_answer_drops_the_text_the_model_ran_into():
    assert main_answer("Paris\n\nQ: What is the capital of Spain?\nA: Madrid") == "Paris"
    assert main_answer("Paris is the capital.\nQuestion: next one") == "Paris is the capital."


@pytest.mark.parametrize(
    "gold, answer, question, expected",
    [
        # taken from the calibration data (GPT-4.1 verdicts)
        ("a cryptophyte", "The chloroplasts in the Dinophysis chloroplast nucleomorph came from a cryptophyte.", "", 1.0),
        ("three", "Thomas Davis had torn his ACL three times in his career.", "", 1.0),
        ("Santa Clara University", "", "", 0.0),
        ("journalism", "Maududi was primarily a writer and then an intellectual leader in the Islamist movement.", "", 0.0),
        ("fifty", "There have been over 50 studies showing a connection between inequality and violence.", "", 1.0),
        ("the European Parliament and the Council of the European Union", "The European Parliament and the Council of the European Union", "", 1.0),
        ("Denver Broncos", "The Carolina Panthers won the game.", "Who won Super Bowl 50?", 0.0),
    ],
)
def test_tricky_verdicts(gold, answer, question, expected):
    assert verdict(gold, answer, question) == expected


def test_verdict_is_deterministic_and_bounded():
    args = ("Paris", "It is Paris.", "What is the capital of France?")
    assert verdict(*args) == verdict(*args) == 1.0


def test_shipped_weights_are_the_fit_on_the_train_split_and_beat_containment_on_held_out(shared_data):
    rows = load_judged(shared_data / "reference-results" / "eval" / "base.json")
    assert len(rows) == 1948
    train, held_out = split(rows)
    refit, shipped = fit(train), VerdictModel.load()
    assert refit.weights == pytest.approx(shipped.weights, abs=1e-6)
    model, _ = agreement(held_out, lambda q, g, a: shipped.probability(q, g, a) >= shipped.threshold)
    contains, _ = agreement(held_out, lambda q, g, a: g.lower() in a.lower())
    always_no, _ = agreement(held_out, lambda q, g, a: False)
    assert always_no.accuracy == pytest.approx(0.634, abs=0.01)
    assert model.accuracy >= 0.88 and model.accuracy > contains.accuracy
    assert model.kappa > 0.7


def test_held_out_split_is_by_passage(shared_data):
    rows = load_judged(shared_data / "reference-results" / "eval" / "base.json")
    train, held_out = split(rows)
    assert not {r.group for r in train} & {r.group for r in held_out}
    assert 0.25 < len(held_out) / len(rows) < 0.35
