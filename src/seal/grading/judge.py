"""The paper's grader: a yes/no verdict from an LLM on any OpenAI-compatible chat endpoint."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from seal.config import JudgeConfig

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
