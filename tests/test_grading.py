import pytest

from conftest import FakeJudge
from seal.config import JudgeConfig
from seal.grading import JudgeError, LLMJudge, exact_match, normalize, token_f1


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  an   apple, a pear ", "apple pear"),
        ("Levi’s Stadium", "levis stadium"),
        ("THEORY", "theory"),  # articles only as whole words
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_exact_match_and_f1():
    assert exact_match("Denver Broncos", "the denver broncos.") == 1.0
    assert exact_match("Denver Broncos", "Broncos") == 0.0
    assert token_f1("Denver Broncos", "Broncos") == pytest.approx(2 / 3)
    assert token_f1("Denver Broncos", "Carolina Panthers") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_llm_judge_retries_and_reads_the_key_from_the_environment(judge_server, monkeypatch, caplog):
    monkeypatch.setenv("SEAL_TEST_KEY", "sk-secret-123")
    monkeypatch.setattr("seal.grading.judge.time.sleep", lambda s: None)
    judge = LLMJudge(JudgeConfig(base_url=judge_server, model="m", api_key_env="SEAL_TEST_KEY", max_retries=2))
    assert judge.verdict("Who won?", "Broncos", "The Denver Broncos won.") == 1.0
    assert judge.verdict("Who won?", "Broncos", "Panthers") == 0.0
    assert len(FakeJudge.calls) == 3  # one 503, retried
    assert FakeJudge.calls[-1]["auth"] == "Bearer sk-secret-123"
    assert "sk-secret-123" not in caplog.text


def test_llm_judge_without_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    judge = LLMJudge(JudgeConfig(api_key_env="NO_SUCH_KEY_VAR"))
    with pytest.raises(JudgeError, match=r"\$NO_SUCH_KEY_VAR"):
        judge.verdict("q", "a", "a")


def test_llm_judge_gives_up_after_retries(monkeypatch):
    monkeypatch.setenv("K", "x")
    monkeypatch.setattr("seal.grading.judge.time.sleep", lambda s: None)
    judge = LLMJudge(JudgeConfig(base_url="http://127.0.0.1:9/v1", api_key_env="K", max_retries=1, timeout_s=1))
    with pytest.raises(JudgeError, match="failed 2 times"):
        judge.verdict("q", "a", "a")
