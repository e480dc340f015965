"""Graders for closed-book answers: plain functions over (gold, answer) strings, plus an optional LLM judge.

Local graders need no network: SQuAD-style normalised exact match and token F1, and the
gold answer's log-likelihood under a model (computed by `seal.sampling`). The LLM judge
asks any OpenAI-compatible chat endpoint for the paper's yes/no verdict.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass

from seal.config import JudgeConfig

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—"}


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(gold: str, answer: str) -> float:
    return float(normalize(gold) == normalize(answer))


def token_f1(gold: str, answer: str) -> float:
    gold_tokens, answer_tokens = normalize(gold).split(), normalize(answer).split()
    if not gold_tokens or not answer_tokens:
        return float(gold_tokens == answer_tokens)
    common = sum((Counter(gold_tokens) & Counter(answer_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(answer_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


# --- LLM judge -------------------------------------------------------------------------------

JUDGE_INSTRUCTIONS = (
    "You grade a student's answer to a question against the reference answer. "
    "Say yes if the student's answer gives the reference answer or an equivalent of it; extra detail is fine "
    "as long as nothing in it contradicts the reference. Say no otherwise. Reply with one word: yes or no."
)


class JudgeError(RuntimeError):
    pass


@dataclass
class LLMJudge:
    """Yes/no verdicts from an OpenAI-compatible /chat/completions endpoint.

    The key is read from the environment variable the config names and is never logged or
    stored; transient failures (timeouts, 429, 5xx) are retried with exponential backoff.
    """

    config: JudgeConfig

    def _key(self) -> str:
        key = os.environ.get(self.config.api_key_env, "")
        if not key:
            raise JudgeError(f"the LLM judge needs an API key in ${self.config.api_key_env}")
        return key

    def _request(self, question: str, gold: str, answer: str) -> str:
        body = {
            "model": self.config.model,
            "temperature": 0,
            "max_tokens": 3,
            "messages": [
                {"role": "system", "content": JUDGE_INSTRUCTIONS},
                {
                    "role": "user",
                    "content": f"Question: {question}\nReference answer: {gold}\nStudent answer: {answer}",
                },
            ],
        }
        request = urllib.request.Request(
            self.config.base_url.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._key()}"},
        )
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
            payload = json.loads(response.read())
        return payload["choices"][0]["message"]["content"]

    def verdict(self, question: str, gold: str, answer: str) -> float:
        log = logging.getLogger(__name__)
        for attempt in range(self.config.max_retries + 1):
            try:
                reply = self._request(question, gold, answer)
                break
            except urllib.error.HTTPError as err:
                if err.code not in (408, 409, 429) and err.code < 500:
                    raise JudgeError(f"judge endpoint refused the request: HTTP {err.code}") from None
                reason = f"HTTP {err.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                reason = type(err).__name__
            except (KeyError, IndexError, json.JSONDecodeError):
                raise JudgeError("judge endpoint returned an unexpected response") from None
            if attempt == self.config.max_retries:
                raise JudgeError(f"judge endpoint failed {attempt + 1} times (last: {reason})")
            delay = min(2**attempt, 30)
            log.warning("judge request failed (%s); retrying in %ss", reason, delay)
            time.sleep(delay)
        word = reply.strip().lower().lstrip("*\"' ")
        return 1.0 if word.startswith("yes") else 0.0
