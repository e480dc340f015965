"""`seal memory`: a user's documents as a library of adapters; add, ask, list, remove; an add killed midway
resumes; a damaged entry and bad input are one clear error."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seal.cli import app
from seal.config import MemoryConfig, load_config
from seal.engine.adapters import ADAPTER_WEIGHTS, AdapterBank
from seal.memory import ENTRIES_DIR, Memory, read_documents

runner = CliRunner()
SETTINGS = ["adapt.epochs=2", "adapt.lora.rank=4", "adapt.lr=1e-2", "sampling.max_new_tokens=12",
            "answer.max_new_tokens=6", "model.dtype=float32"]  # fmt: skip
TINY = [arg for setting in SETTINGS for arg in ("--set", setting)]
DOCUMENTS = [
    ("Paris", "The capital of France is Paris. The Seine flows through it."),
    ("Broncos", "The Denver Broncos won Super Bowl 50."),
    ("Santa Clara", "Levi's Stadium is in Santa Clara, California."),
]


@pytest.fixture
def documents(tmp_path) -> Path:
    path = tmp_path / "documents.json"
    path.write_text(json.dumps([{"title": t, "context": c} for t, c in DOCUMENTS]))
    return path


def tiny_config(tiny_dir, *overrides: str) -> MemoryConfig:
    return load_config(MemoryConfig, None, [f"model.name={tiny_dir}", *SETTINGS, *overrides])


def invoke(*args: str):
    return runner.invoke(app, ["memory", *map(str, args)])


def said(result) -> str:
    """The command's output as one line (the console wraps long lines)."""
    return " ".join(result.output.split())


def test_add_ask_list_and_remove(tiny_dir, documents, tmp_path):
    library = tmp_path / "library"
    added = invoke("add", library, "--data", documents, "--model", tiny_dir, *TINY)
    assert added.exit_code == 0, added.output
    ids = [e.id for e in Memory(library).entries()]
    assert len(ids) == 3 and all(i in added.output for i in ids)

    answered = invoke("ask", library, "Who won Super Bowl 50?")
    assert answered.exit_code == 0, answered.output
    assert f"source: Broncos (entry {ids[1]}" in answered.output

    listed = invoke("list", library)
    assert listed.exit_code == 0 and listed.output.count(" ok") == 3 and "3 entries" in listed.output

    again = invoke("add", library, "--data", documents)
    assert again.exit_code == 2 and "already in the library" in said(again) and "Traceback" not in again.output

    removed = invoke("remove", library, ids[1][:6])  # the start of an id is enough
    assert removed.exit_code == 0 and "Broncos" in removed.output
    assert [e.title for e in Memory(library).entries()] == ["Paris", "Santa Clara"]
    assert not (library / ENTRIES_DIR / ids[1]).exists()
    # the removed document can be added again; the library keeps the settings it was made with
    broncos = tmp_path / "broncos.txt"
    broncos.write_text("The Denver Broncos won Super Bowl 50.")
    assert invoke("add", library, "--data", broncos).exit_code == 0
    different = invoke("add", library, "--data", broncos, "--set", "adapt.epochs=3")
    assert different.exit_code == 2 and "other settings" in said(different)


def test_the_python_api_routes_each_question_and_names_its_source(tiny_dir, documents, tmp_path):
    memory = Memory(tmp_path / "library", tiny_config(tiny_dir), create=True)
    entries = memory.add(read_documents(documents))
    questions = ["What is the capital of France?", "Who won Super Bowl 50?", "Where is Levi's Stadium?"]
    answers = memory.ask_many(questions)
    assert [a.sources[0].id for a in answers] == [e.id for e in entries]
    alone = memory.ask(questions[2])  # one at a time or batched: the same answer from the same entry
    assert alone.text == answers[2].text and alone.sources[0].id == answers[2].sources[0].id
    mixed = Memory(tmp_path / "mixed", tiny_config(tiny_dir, "router.top_k=2"), create=True)
    mixed.add(read_documents(documents))
    (answer,) = mixed.ask_many(questions[:1])
    assert len(answer.sources) == 2 and answer.sources[0].title == "Paris"


def test_an_add_killed_mid_write_resumes_without_a_duplicate_or_a_broken_entry(
    tiny_dir, documents, tmp_path, monkeypatch
):
    library = tmp_path / "library"
    real_save, saves = AdapterBank.save, []

    def dies_writing_the_second_entry(self, slot, directory, base_model):
        saves.append(slot)
        if len(saves) == 2:  # half an entry on disk, then the process is gone
            Path(directory).mkdir(parents=True)
            (Path(directory) / ADAPTER_WEIGHTS).write_bytes(b"half an adapter")
            raise KeyboardInterrupt
        return real_save(self, slot, directory, base_model)

    monkeypatch.setattr(AdapterBank, "save", dies_writing_the_second_entry)
    with pytest.raises(KeyboardInterrupt):
        Memory(library, tiny_config(tiny_dir), create=True).add(read_documents(documents))
    monkeypatch.setattr(AdapterBank, "save", real_save)
    interrupted = Memory(library)
    assert len(interrupted.entries()) == 1 and set(interrupted.problems().values()) == {None}

    resumed = invoke("add", library, "--data", documents)  # the same command again finishes it
    assert resumed.exit_code == 0, resumed.output
    memory = Memory(library)
    assert sorted(e.title for e in memory.entries()) == sorted(t for t, _ in DOCUMENTS)
    assert set(memory.problems().values()) == {None}
    assert sorted(p.name for p in (library / ENTRIES_DIR).iterdir()) == sorted(e.id for e in memory.entries())
    assert invoke("add", library, "--data", documents).exit_code == 2  # now whole: a second add is refused


def test_a_damaged_entry_is_refused_never_used(tiny_dir, documents, tmp_path):
    library = tmp_path / "library"
    memory = Memory(library, tiny_config(tiny_dir), create=True)
    paris = memory.add(read_documents(documents))[0]
    weights = library / ENTRIES_DIR / paris.id / ADAPTER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same size, other bytes
    result = invoke("ask", library, "What is the capital of France?")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"entry {paris.id} ('Paris') is damaged" in said(result) and "sha256" in result.output
    listed = invoke("list", library)
    assert listed.exit_code == 0 and "damaged" in listed.output and listed.output.count(" ok") == 2
    weights.unlink()
    assert "is missing" in said(invoke("ask", library, "What is the capital of France?"))


def test_an_interrupted_index_write_leaves_the_old_index(tiny_dir, tmp_path):
    library = tmp_path / "library"
    Memory(library, tiny_config(tiny_dir), create=True)
    (library / "index.json.partial").write_text('{"schema": "seal.mem')  # a write cut short, never renamed
    assert Memory(library).entries() == []
    (library / "index.json").write_text('{"schema": "seal.mem')
    result = invoke("list", library)
    assert result.exit_code == 2 and "index.json is damaged" in said(result)


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty document", "the document is empty"),
        ("empty context", "field 'context' is empty"),
        ("no such file", "no such file"),
        ("missing library", "is not a memory library"),
        ("empty library", "holds no documents"),
        ("empty question", "the question is empty"),
        ("unknown entry", "no entry in"),
    ],
)
def test_bad_input_is_one_clear_error(case, message, tiny_dir, tmp_path):
    library = tmp_path / "library"
    if case in ("empty library", "empty question", "unknown entry"):
        Memory(library, tiny_config(tiny_dir), create=True)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    no_context = tmp_path / "no-context.json"
    no_context.write_text(json.dumps([{"title": "A title", "context": ""}]))
    args = {
        "empty document": ["add", library, "--data", empty],
        "empty context": ["add", library, "--data", no_context],
        "no such file": ["add", library, "--data", tmp_path / "absent.json"],
        "missing library": ["ask", tmp_path / "nowhere", "Who won?"],
        "empty library": ["ask", library, "Who won?"],
        "empty question": ["ask", library, " "],
        "unknown entry": ["remove", library, "abc"],
    }[case]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and message in said(result)
    assert "Traceback" not in result.output
    if case in ("empty document", "empty context", "no such file"):
        assert not library.exists()  # an add that fails on its input creates nothing
