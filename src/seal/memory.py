"""`seal memory`: a user's own documents, each absorbed as its own adapter, and questions answered by the
adapter(s) of the document they are about.

The machinery of the `library` mitigation of `seal knowledge continual`, kept in a directory:

    DIR/config.yaml            the library's settings (`MemoryConfig`), fixed when it is created
    DIR/index.json             every entry: its title, when it was added, and each of its files' size and sha256
    DIR/entries/<id>/          adapter_model.safetensors, adapter_config.json (peft format), document.json

Adding a document: the configured model writes a self-edit of it, a fresh LoRA is trained on the plan made of
that self-edit (K documents at a time in one adapter bank), and the entry is written whole under a scratch name
and renamed, then entered in the index (itself replaced atomically). An entry's id is a hash of its title and
text, so the same document is never added twice; an `add` killed midway is finished by running it again (the
index remembers what it was adding and the self-edits already written). Asking: the question is routed to the
closest entry (or mixture of the `top_k` closest, `RouterConfig`) and answered through its adapter, with the
entry's title as the topic. Every file an answer reads is checked against the index first; a damaged entry is
refused with the way to repair it, never used.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError
from rich.console import Console

from seal.config import MemoryConfig, dump_config
from seal.domains import knowledge
from seal.domains.knowledge import Passage, Question
from seal.engine import routing
from seal.engine.adapters import AdapterBank, SavedAdapter
from seal.engine.planner import resolved
from seal.engine.sampling import generate
from seal.engine.training import TrainJob, train_adapters
from seal.errors import DataError, LibraryError
from seal.experiments.knowledge_steps import training_documents
from seal.experiments.steps import TrainingProgress, progress_bar, sample_work, stable_seed, training_tokens
from seal.files import damage, sha256, written
from seal.models import ModelOnDemand
from seal.store import atomic_directory

INDEX_FILE = "index.json"
CONFIG_FILE = "config.yaml"
ENTRIES_DIR = "entries"
DOCUMENT_FILE = "document.json"
SCHEMA = "seal.memory/1"
TEXT_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Entry:
    """A document in the library: its id (a hash of title and text), title, when it was added, how many
    training documents its self-edit gave, and the bytes its files take."""

    id: str
    title: str
    added: str
    self_edit_lines: int
    bytes: int


@dataclass(frozen=True)
class Source:
    """An entry an answer came from, the weight of its adapter in the answer and its similarity to the question."""

    id: str
    title: str
    weight: float
    similarity: float


@dataclass(frozen=True)
class Answer:
    """The answer to a question and the entries it came from (the closest first)."""

    text: str
    sources: list[Source]


def document_id(document: Passage) -> str:
    """A document's id in a library: the first 12 hex digits of the sha256 of its title and text."""
    return sha256([f"{document.title}\n{document.context}".encode()])[:12]


def read_documents(path: str | Path) -> list[Passage]:
    """The documents in `path`: a JSON list of {title, context} records (questions, if any, are ignored), a
    text or Markdown file (one document titled by the file's name), or a folder of such text files.

    Raises:
        DataError: naming the file (and record) that is missing, empty or malformed.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"{path}: holds no {' or '.join(TEXT_SUFFIXES)} documents")
        return [doc for f in files for doc in read_documents(f)]
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix != ".json":
        text = path.read_text().strip()
        if not text:
            raise DataError(f"{path}: the document is empty")
        return [Passage(path.stem, text, [])]
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if not isinstance(records, list) or not records:
        raise DataError(f"{path}: expected a non-empty JSON list of {{title, context}} documents")
    return [
        knowledge.parse_passage({"questions": [], **r} if isinstance(r, dict) else r, f"{path}: record {i}", i)
        for i, r in enumerate(records)
    ]


class Memory:
    """A library of documents, each absorbed as its own LoRA adapter, in a directory.

    Example:
        memory = Memory("my-notes", MemoryConfig(), create=True)
        memory.add(read_documents("notes.json"))
        answer = memory.ask("Who founded the Voser Society?")
        print(answer.text, answer.sources[0].title)
    """

    def __init__(
        self,
        directory: str | Path,
        cfg: MemoryConfig | None = None,
        *,
        create: bool = False,
        console: Console | None = None,
    ):
        """Open the library in `directory`.

        Args:
            directory: the library's directory.
            cfg: its settings: those it was created with are kept, and a different `cfg` is refused; a new
                library is created with `cfg` (or the defaults).
            create: create the library when `directory` holds none (else that is an error).
            console: where progress is drawn.
        Raises:
            LibraryError: no library there (and `create` is false), or one made with other settings.
        """
        self.dir = Path(directory)
        self.console = console or Console()
        config_path = self.dir / CONFIG_FILE
        if not (self.dir / INDEX_FILE).exists():
            if not create:
                raise LibraryError(
                    f"{self.dir} is not a memory library (no {INDEX_FILE}): create one with "
                    f"`seal memory add {self.dir} --data FILE`"
                )
            self.dir.mkdir(parents=True, exist_ok=True)
            self.cfg = cfg or MemoryConfig()
            dump_config(self.cfg, config_path)
            self._write_index({"schema": SCHEMA, "entries": {}, "pending": None})
        else:
            try:
                self.cfg = MemoryConfig.model_validate(yaml.safe_load(config_path.read_text()))
            except (OSError, yaml.YAMLError, ValidationError) as err:
                first = str(err).strip().splitlines()[0]
                raise LibraryError(f"{config_path}: not a readable library config ({first})") from None
            if cfg is not None and cfg != self.cfg:
                theirs, ours = cfg.model_dump(), self.cfg.model_dump()
                changed = sorted(k for k in ours if theirs[k] != ours[k])
                raise LibraryError(
                    f"{self.dir} was built with other settings (differs in: {', '.join(changed)}); "
                    "leave out the config and overrides to use its own"
                )
        self.model = ModelOnDemand(self.cfg.model)

    # --- the index -----------------------------------------------------------------------------------

    def _read_index(self) -> dict:
        path = self.dir / INDEX_FILE
        try:
            index = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise LibraryError(f"{path} is damaged (not valid JSON: {err.msg}); restore it from a backup") from None
        if not isinstance(index, dict) or index.get("schema") != SCHEMA:
            raise LibraryError(f"{path} is not the index of a memory library ({SCHEMA})")
        return index

    def _write_index(self, index: dict) -> None:
        """Replace the index in one step: written whole under a scratch name, flushed to disk, renamed."""
        scratch = self.dir / (INDEX_FILE + ".partial")
        with scratch.open("w") as f:
            json.dump(index, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(scratch, self.dir / INDEX_FILE)

    def entries(self) -> list[Entry]:
        """Every entry, in the order they were added."""
        return [self._entry(i, meta) for i, meta in self._read_index()["entries"].items()]

    @staticmethod
    def _entry(entry_id: str, meta: dict) -> Entry:
        size = sum(f["size"] for f in meta["files"].values())
        return Entry(entry_id, meta["title"], meta["added"], meta["self_edit_lines"], size)

    def problems(self) -> dict[str, str | None]:
        """Per entry id, what is wrong with its files (None when each has its recorded size and sha256)."""
        out = {}
        for entry_id, meta in self._read_index()["entries"].items():
            try:
                self._verified(entry_id, meta)
                out[entry_id] = None
            except LibraryError as err:
                out[entry_id] = str(err)
        return out

    def _verified(self, entry_id: str, meta: dict, names: list[str] | None = None) -> Path:
        """The entry's directory, once its files (or those named) are checked against the index."""
        directory = self.dir / ENTRIES_DIR / entry_id
        problem = damage(directory, meta["files"], names or None)
        if problem is not None:
            raise LibraryError(
                f"entry {entry_id} ({meta['title']!r}) is damaged: {problem}; remove it with "
                f"`seal memory remove {self.dir} {entry_id}` and add its document again"
            )
        return directory

    def _find(self, index: dict, entry_id: str) -> str:
        matches = [i for i in index["entries"] if i.startswith(entry_id)] if entry_id else []
        if len(matches) != 1:
            what = "no entry" if not matches else f"{len(matches)} entries"
            raise LibraryError(f"{what} in {self.dir} with an id starting {entry_id!r} (`seal memory list` shows them)")
        return matches[0]

    def remove(self, entry_id: str) -> Entry:
        """Take an entry out of the library (its id, or the start of it) and delete its files."""
        index = self._read_index()
        found = self._find(index, entry_id)
        meta = index["entries"].pop(found)
        self._write_index(index)  # out of the index first: a half-deleted entry is never listed
        shutil.rmtree(self.dir / ENTRIES_DIR / found, ignore_errors=True)
        return self._entry(found, meta)

    # --- adding ------------------------------------------------------------------------------------

    def add(self, documents: list[Passage]) -> list[Entry]:
        """Absorb each document as its own adapter, trained on a self-edit the model writes of it.

        Running the same `add` again after it was interrupted finishes it; adding a document the library
        already holds is refused.

        Args:
            documents: titled texts (`read_documents` reads them from a file).
        Returns:
            the new entries, in the order of `documents`.
        Raises:
            DataError: no documents, or the same document twice among them.
            LibraryError: a document already in the library.
        """
        if not documents:
            raise DataError("no documents to add")
        ids = [document_id(d) for d in documents]
        twice = next((d for i, d in zip(ids, documents) if ids.count(i) > 1), None)
        if twice is not None:
            raise DataError(f"the document {twice.title!r} is given twice")
        index = self._read_index()
        pending = index["pending"]
        if pending is None or pending["ids"] != ids:  # not the interrupted add, run again: a new one
            held = next(((i, d) for i, d in zip(ids, documents) if i in index["entries"]), None)
            if held is not None:
                raise LibraryError(
                    f"the document {held[1].title!r} is already in the library (entry {held[0]}); adding a document "
                    f"twice is refused: `seal memory remove {self.dir} {held[0]}` first to add it again"
                )
            index["pending"] = {"ids": ids, "self_edits": {}}
            self._write_index(index)
        todo = [(i, d) for i, d in zip(ids, documents) if i not in index["entries"]]
        self._write_self_edits(index, todo)
        self._train(index, todo)
        index["pending"] = None
        self._write_index(index)
        return [self._entry(i, index["entries"][i]) for i in ids]

    def _write_self_edits(self, index: dict, todo: list[tuple[str, Passage]]) -> None:
        """A self-edit of each document that has none yet, kept in the index's pending add batch by batch."""
        written = index["pending"]["self_edits"]
        wanted = [(i, knowledge.self_edit_prompt(d, self.cfg.variant)) for i, d in todo if i not in written]
        if not wanted:
            return
        sampling, size = self.cfg.sampling, self.cfg.sampling.batch_size
        with progress_bar(self.console) as progress:
            task = progress.add_task("writing self-edits", total=len(wanted))
            for s in range(0, len(wanted), size):
                batch = wanted[s : s + size]
                # seeded by the batch's first document: the same self-edits wherever the batch falls
                texts = sample_work(self.model(), (0, batch), sampling, self.cfg.seed, batch[0][0])
                written.update({i: text for (i, _), text in zip(batch, texts)})
                self._write_index(index)
                progress.advance(task, len(batch))

    def _train(self, index: dict, todo: list[tuple[str, Passage]]) -> None:
        """One fresh adapter per document, `adapt.slots` at a time; each entry written whole and entered in
        the index as soon as its adapter is trained."""
        if not todo:
            return
        lm, cfg = self.model(), self.cfg
        self_edits = index["pending"]["self_edits"]
        plans = [knowledge.plan(d, self_edits[i], cfg.variant, cfg.split_lines) for i, d in todo]
        jobs = [TrainJob(training_documents(p), stable_seed(cfg.seed, i)) for (i, _), p in zip(todo, plans)]
        adapt = resolved(lm, cfg.adapt)
        bank = AdapterBank.attach(lm.model, adapt.lora, min(adapt.slots, len(jobs)))

        def finished(slot: int, j: int) -> None:
            (entry_id, document), directory = todo[j], self.dir / ENTRIES_DIR / todo[j][0]
            with atomic_directory(directory) as partial:
                bank.save(slot, partial, base_model=lm.name)
                content = {"title": document.title, "context": document.context, "self_edit": self_edits[entry_id]}
                (partial / DOCUMENT_FILE).write_text(json.dumps(content, indent=1))
            files = written(directory)
            index["entries"][entry_id] = {
                "title": document.title,
                "added": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "self_edit_lines": plans[j].self_edit_documents,
                "files": files,
            }
            self._write_index(index)

        tokens = sum(training_tokens(lm, job.documents, cfg.adapt.epochs, cfg.adapt) for job in jobs)
        hint = "Each document is trained once; the library keeps it."
        with TrainingProgress(self.console, f"absorbing {len(jobs)} document(s)", [tokens], cfg.model, hint) as bar:
            train_adapters(lm, bank, jobs, cfg.adapt, finished)
            bar.unit_done(0)

    # --- asking ------------------------------------------------------------------------------------

    def ask(self, question: str) -> Answer:
        """The answer to `question` from the adapter(s) of the entry (entries) it is routed to."""
        return self.ask_many([question])[0]

    def ask_many(self, questions: list[str]) -> list[Answer]:
        """Answers to several questions, each routed on its own and all answered in batched passes (one bank
        slot per distinct adapter or mixture).

        Raises:
            DataError: an empty question.
            LibraryError: an empty library, or a damaged entry among those read.
        """
        if any(not q.strip() for q in questions):
            raise DataError("the question is empty")
        entries = self._read_index()["entries"]
        if not entries:
            raise LibraryError(f"{self.dir} holds no documents: add some with `seal memory add {self.dir} --data FILE`")
        ids = list(entries)
        documents = [
            json.loads((self._verified(i, entries[i], [DOCUMENT_FILE]) / DOCUMENT_FILE).read_text()) for i in ids
        ]
        router, lm = self.cfg.router, self.model()
        if router.keys == "plan":
            keys = [knowledge.plan(Passage(d["title"], d["context"], []), d["self_edit"], self.cfg.variant,
                                   self.cfg.split_lines).documents for d in documents]  # fmt: skip
        else:
            keys = [[f"{d['title']}\n{d['context']}"] for d in documents]
        routes = routing.route(router, routing.embedder(router.embedder, lm), questions, keys)
        adapters = {e: SavedAdapter.read(self._verified(ids[e], entries[ids[e]])) for r in routes for e in r.entries}
        prompts = [
            knowledge.answer_prompt(lm, Passage(documents[r.entries[0]]["title"], "", []), Question(q, ""))
            for q, r in zip(questions, routes)
        ]
        texts = [""] * len(questions)
        for rows, bank, slots in routing.routed_banks(lm, routes, adapters, router.slots):
            answers = generate(
                lm,
                [prompts[i] for i in rows],
                max_new_tokens=self.cfg.answer.max_new_tokens,
                batch_size=self.cfg.answer.batch_size,
                stop_at_newline=self.cfg.answer.stop_at_newline,
                bank=bank,
                slots=slots,
            )
            for i, text in zip(rows, answers):
                texts[i] = text
        return [
            Answer(
                text,
                [
                    Source(ids[e], documents[e]["title"], w, sim)
                    for e, w, sim in zip(r.entries, r.weights, r.similarities)
                ],
            )  # fmt: skip
            for text, r in zip(texts, routes)
        ]
