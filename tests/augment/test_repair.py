"""The repair path on its own: an invalid answer -> one repair prompt quoting it -> a valid answer.

SmolLM2 cannot be made to answer invalidly and then validly on demand, so the
answers are recorded completions in a real completion store, under the exact
keys the pipeline asks for (which is how every rerun is served). The backend
is a real transformers backend that is never loaded: if the pipeline asked
for anything other than the first-round prompt and the repair prompt built
from the recorded bad answer and its reason, it would have to generate, and
the test checks that it did not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrec.augment.config import AugmentConfig
from llmrec.augment.pipeline import answer_tasks, repair_messages
from llmrec.augment.tasks import profile_tasks, select_users
from llmrec.augment.validate import AnswerValidationError
from llmrec.backends import get_backend
from llmrec.backends.base import ChatRequest, Completion
from llmrec.data.tables import load_split
from llmrec.backends.store import CompletionStore, request_key

BAD = "Sure! This user clearly enjoys dramas and is probably in their thirties."
GOOD = json.dumps({"age": 34, "gender": "female", "liked_genres": ["Drama"], "disliked_genres": ["Horror"],
                   "liked_directors": ["Agnès Varda"], "country": "France", "language": "French"})  # fmt: skip


def _record(store: CompletionStore, backend, request: ChatRequest, text: str) -> None:
    store._put(request_key(backend, request), backend, request, Completion(text, "stop", 10, 20, 0.1))


@pytest.mark.parametrize("second_answer", [GOOD, BAD], ids=["repaired", "still invalid"])
def test_an_invalid_answer_gets_one_repair_prompt_quoting_it(prepared_run: Path, tmp_path: Path, second_answer: str) -> None:
    tables = load_split(prepared_run)
    task_set = profile_tasks(tables, select_users(tables.train, tables.n_users, 2), 5, None)
    broken, fine = task_set.tasks
    sampling = AugmentConfig().sampling("profiles")
    backend = get_backend("transformers", model="smollm2-135m")  # never loaded: every answer is recorded
    with pytest.raises(AnswerValidationError) as caught:
        broken.validate(BAD)
    reason = caught.value.reason
    repair = ChatRequest(repair_messages(broken, BAD, reason), sampling, broken.schema)
    # The repair prompt is the conversation so far, the bad answer quoted, and what was wrong with it.
    assert repair.messages[: len(broken.messages)] == broken.messages
    assert repair.messages[-2] == {"role": "assistant", "content": BAD}
    assert reason in repair.messages[-1]["content"] and repair.messages[-1]["role"] == "user"

    with CompletionStore(tmp_path / "store.sqlite") as store:
        _record(store, backend, ChatRequest(broken.messages, sampling, broken.schema), BAD)
        _record(store, backend, ChatRequest(fine.messages, sampling, fine.schema), GOOD)
        _record(store, backend, repair, second_answer)
        accepted, counts = answer_tasks(task_set, backend, store, sampling)
    assert backend._model is None, "the pipeline asked for a prompt that was not recorded"
    assert counts.requested == 2 and counts.valid == 1
    assert counts.usage["prompts"] == 3 and counts.usage["cache_hits"] == 3  # two first answers, one repair
    if second_answer == GOOD:
        assert (counts.repaired, counts.failed) == (1, 0)
        assert accepted[broken.key]["age"] == 34 and accepted[broken.key]["country"] == "France"
    else:
        assert (counts.repaired, counts.failed) == (0, 1) and broken.key not in accepted
        assert counts.failures == [{"id": broken.entity, "reason": reason, "first_reason": reason}]
    assert accepted[fine.key]["gender"] == "female"
