"""The CLI end to end on a tiny local model directory, and the configs contracts."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import FakeJudge
from seal.cli import COMMANDS, app
from seal.config import (
    ArcEvalConfig,
    ArcTrainConfig,
    KnowledgeEvalConfig,
    load_config,
)

ROOT = Path(__file__).resolve().parents[1]


COMMAND_CONFIGS = {f"{c.group} {c.name}": c.config for c in COMMANDS}


def recipe_class(path: Path):
    """A recipe names its command on its first line (`# run: python3 -m seal knowledge eval -c ...`)."""
    first = path.read_text().splitlines()[0]
    match = re.fullmatch(rf"# run: python3 -m seal (\w+ \w+) -c configs/{re.escape(path.name)}", first)
    assert match, f"{path.name}: first line must be '# run: python3 -m seal <command> -c configs/{path.name}'"
    return COMMAND_CONFIGS[match.group(1)]


runner = CliRunner()


@pytest.fixture
def passages_file(tmp_path):
    data = [
        {
            "title": "Paris",
            "context": "The capital of France is Paris. The Seine flows through it.",
            "questions": [{"question": "What is the capital of France?", "answer": "Paris"}],
            "completions": ["1. Paris is the capital.\n2. The Seine is in Paris."],
        },
        {
            "title": "Broncos",
            "context": "The Denver Broncos won Super Bowl 50.",
            "questions": [{"question": "Who won Super Bowl 50?", "answer": "Denver Broncos"}],
            "completions": [""],
        },
    ]
    path = tmp_path / "passages.json"
    path.write_text(json.dumps(data))
    return path


def tiny_eval_args(tiny_dir, data, out, *extra):
    return [
        "knowledge", "eval", "--model", str(tiny_dir), "--data", str(data), "--passages", "2",
        "--out", str(out), "--set", "adapt.epochs=2", "--set", "adapt.lora.rank=4",
        "--set", "sampling.max_new_tokens=12", "--set", "answer.max_new_tokens=6", "--set", "model.dtype=float32",
        *extra,
    ]  # fmt: skip


def test_eval_runs_records_and_resumes_without_redoing_work(tiny_dir, passages_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = tiny_eval_args(tiny_dir, passages_file, out, "--conditions", "base,in-context,passage,implications,file")
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["conditions"]) == {"base", "in-context", "passage", "implications", "file"}
    assert results["n_passages"] == 2 and results["conditions"]["implications"]["n_self_edits"] == 2
    assert results["conditions"]["base"]["gain"] == 0.0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert KnowledgeEvalConfig.model_validate(saved).adapt.epochs == 2
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 5 * 2  # five conditions x two one-question passages
    assert {"question", "gold", "answer", "answer_before", "em", "f1", "loglik"} <= set(records[0])

    def no_more_work(*a, **k):
        raise AssertionError("a resumed, finished run must not adapt again")

    monkeypatch.setattr("seal.experiments.knowledge_steps.adapt_batch", no_more_work)
    monkeypatch.setattr("seal.experiments.steps.generate", no_more_work)
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert json.loads((out / "results.json").read_text()) == results


def test_same_seed_same_results(tiny_dir, passages_file, tmp_path):
    outputs = []
    for name in ("a", "b"):
        args = tiny_eval_args(tiny_dir, passages_file, tmp_path / name, "--conditions", "passage,implications")
        assert runner.invoke(app, args).exit_code == 0
        outputs.append(json.loads((tmp_path / name / "results.json").read_text())["conditions"])
    for condition in outputs[0]:
        assert outputs[0][condition]["macro"] == pytest.approx(outputs[1][condition]["macro"], abs=1e-4)


def test_changed_config_on_existing_run_is_refused(tiny_dir, passages_file, tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, tiny_eval_args(tiny_dir, passages_file, out, "--conditions", "base")).exit_code == 0
    again = runner.invoke(app, tiny_eval_args(tiny_dir, passages_file, out, "--conditions", "base", "--k", "3"))
    assert again.exit_code == 2 and "different config" in again.output


def test_a_run_saved_before_a_config_field_existed_resumes_and_a_changed_value_is_still_refused(tmp_path):
    from seal.store import CONFIG_FILE, RunConfigMismatch, RunStore

    config = KnowledgeEvalConfig()
    RunStore(tmp_path, config).close()
    saved = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    del saved["adapt"]["refill"]  # as written by a version without the field
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(saved))
    RunStore(tmp_path, config).close()
    with pytest.raises(RunConfigMismatch, match="adapt"):
        RunStore(tmp_path, config.model_copy(update={"adapt": config.adapt.model_copy(update={"refill": 2})}))


def test_a_run_may_resume_on_another_executor_and_the_saved_config_says_which(tmp_path):
    from seal.store import CONFIG_FILE, RunStore

    config = KnowledgeEvalConfig()
    RunStore(tmp_path, config).close()
    moved = config.model_copy(
        update={"executor": config.executor.model_copy(update={"kind": "processes", "workers": 1})}
    )
    RunStore(tmp_path, moved).close()
    saved = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    assert saved["executor"]["kind"] == "processes" and saved["executor"]["workers"] == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "/definitely/not/here"], "does not exist"),
        (["--conditions", "base,telepathy"], "unknown condition"),
        (["--reward", "judge"], "reward 'judge' is not available"),
        (["--set", "adapt.epochs=0"], "adapt.epochs"),
        (["--set", "adapt.nonsense=1"], "adapt.nonsense"),
        (["--set", "novalue"], "key=value"),
        (["--set", "adapt.lora=["], "--set adapt.lora=[: not valid YAML"),
    ],
)
def test_bad_options_are_one_clear_error(tiny_dir, passages_file, tmp_path, extra, message):
    result = runner.invoke(app, tiny_eval_args(tiny_dir, passages_file, tmp_path / "run", *extra))
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_malformed_data_file_is_one_clear_error(tiny_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"title": "x", "context": "y"}]')
    result = runner.invoke(app, tiny_eval_args(tiny_dir, bad, tmp_path / "run"))
    assert result.exit_code == 2 and "record 0: missing field 'questions'" in result.output


def test_a_chosen_passage_without_questions_is_one_clear_error(tiny_dir, passages_file, tmp_path):
    data = json.loads(passages_file.read_text())
    data[0]["questions"] = []  # Paris: the paper-subset order puts it second, so the first passage alone runs
    no_questions = tmp_path / "no_questions.json"
    no_questions.write_text(json.dumps(data))
    result = runner.invoke(app, tiny_eval_args(tiny_dir, no_questions, tmp_path / "run"))
    output = " ".join(result.output.split())
    assert (
        result.exit_code == 2
        and "1 of the chosen passages have no questions to score, e.g. record 0 ('Paris')" in output
    )
    assert (
        runner.invoke(app, tiny_eval_args(tiny_dir, no_questions, tmp_path / "run", "--passages", "1")).exit_code == 0
    )


def test_malformed_config_file_is_one_clear_error(tiny_dir, passages_file, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("adapt:\n  epochs: 2\n lr: 1e-3\n")
    result = runner.invoke(app, tiny_eval_args(tiny_dir, passages_file, tmp_path / "run", "-c", str(bad)))
    output = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2 and f"{bad}: not valid YAML" in output and "at line 3" in output
    assert "Traceback" not in output


def test_a_judge_endpoint_that_fails_mid_run_ends_it_with_a_clear_error_and_the_same_command_resumes(
    tiny_dir, passages_file, judge_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    args = tiny_eval_args(
        tiny_dir, passages_file, tmp_path / "run", "--conditions", "base,passage", "--reward", "judge"
    )
    args += [
        "--set",
        f"judge.base_url={judge_server}",
        "--set",
        "judge.max_retries=0",
    ]  # the fake's first reply is a 503
    failed = runner.invoke(app, args)
    output = " ".join(failed.output.split())
    assert (
        failed.exit_code == 2
        and "judge endpoint failed 1 times" in output
        and "re-run the same command to resume" in output
    )
    assert "Traceback" not in output
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["reward"] == "judge" and "judge" in results["conditions"]["passage"]["macro"]


def test_file_condition_needs_completions_for_every_passage(tiny_dir, passages_file, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"title": "Z", "context": "z", "questions": [], "completions": ["a"]}]))
    result = runner.invoke(
        app,
        tiny_eval_args(tiny_dir, passages_file, tmp_path / "run", "--conditions", "file", "--self-edits", str(other)),
    )
    assert result.exit_code == 2 and "no completions for 2 evaluated passage(s)" in result.output


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_parses(recipe):
    load_config(recipe_class(recipe), recipe)


KNOWLEDGE_SMALL = ["--set", "adapt.epochs=1", "--set", "sampling.max_new_tokens=8", "--set", "answer.max_new_tokens=4"]
ARC_SMALL = [
    "--set",
    "sampling.max_new_tokens=8",
    "--set",
    "ttt.views=1",
    "--set",
    "ttt.max_examples=2",
    "--set",
    "ttt.max_output_tokens=16",
    "--set",
    "oracle.epochs=1",
    "--set",
    "ttt.max_tokens=500",
]
SMALL = {
    "knowledge eval": ["--passages", "1", *KNOWLEDGE_SMALL],
    "knowledge train": ["--train-passages", "2", "--eval-passages", "1", "--rounds", "1", "--k", "2", *KNOWLEDGE_SMALL],
    "knowledge continual": ["--sequences", "1", "--steps", "2", *KNOWLEDGE_SMALL],
    "knowledge cpt": ["--passages", "2", *KNOWLEDGE_SMALL],
    "arc eval": ["--k", "1", *ARC_SMALL],
    "arc train": ["--k", "1", "--eval-k", "1", *ARC_SMALL],
    "arc select": ["--candidates", "1", "--tries", "1", *ARC_SMALL],
    "arc landscape": [
        "--tasks",
        "1",
        "--random-plans",
        "1",
        "--set",
        "grid.augmentations=[[basic]]",
        "--set",
        "grid.strategies=[output]",
        "--set",
        "grid.lrs=[1e-3]",
        *ARC_SMALL,
    ],
}


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("cpu-*.yaml")), ids=lambda p: p.name)
def test_every_cpu_recipe_runs_as_its_first_line_says(recipe, tiny_dir, tmp_path, monkeypatch):
    """Each CPU recipe's own command, data paths and settings, on the tiny model with fewer steps."""
    monkeypatch.chdir(ROOT)
    command = shlex.split(recipe.read_text().splitlines()[0].removeprefix("# run: "))[3:]
    args = command + ["--model", str(tiny_dir), "--out", str(tmp_path / "run"), *SMALL[" ".join(command[:2])]]
    result = runner.invoke(app, args + ["--set", "model.dtype=float32"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "results.json").exists()


def test_documented_distill_command_distils_the_probes_self_edits(tiny_lm, tiny_dir, passages3, tmp_path, monkeypatch):
    """The knowledge page's distillation command on the tiny model: the probes' questions are filed, then the pairs
    the in-context model answered them with, and each plan is trained under distill."""
    from seal.domains import knowledge
    from seal.experiments.knowledge_steps import probe_answer_work
    from seal.store import RunStore
    from test_docs import code_blocks

    block = next(b for b in code_blocks(ROOT / "docs" / "knowledge.md", "bash") if "adapt.objective=distill" in b)
    args = shlex.split(block.replace("\\\n", " "))
    assert args[:5] == ["python3", "-m", "seal", "knowledge", "eval"]
    out = tmp_path / "run"
    args[args.index("--out") + 1] = str(out)
    args[args.index("--data") + 1] = str(passages3)
    small = ["--model", str(tiny_dir), *SMALL["knowledge eval"], "--passages", "2", "--k", "1"]
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, args[3:] + small + ["--set", "model.dtype=float32"])
    assert result.exit_code == 0, result.output
    config = load_config(KnowledgeEvalConfig, out / "config.yaml")
    assert config.adapt.objective == "distill" and "probes" in config.conditions
    results = json.loads((out / "results.json").read_text())
    assert results["conditions"]["probes"]["n_self_edits"] == 2
    store = RunStore(out, config, read_only=True)
    edits = store.all("self_edits")
    store.close()
    by_key = {p.key: p for p in knowledge.load_passages(passages3)}
    for passage in (by_key[row["key"]] for row in results["passages"]):
        written, pairs = edits[f"probes/questions/{passage.key}/0"], edits[f"probes/{passage.key}/0"]
        assert passage.context in written["prompt"]
        assert pairs["written"] == written["text"] and pairs["prompt"] == written["prompt"]
        assert pairs["text"] == probe_answer_work(tiny_lm, [("k", passage, written)], config.answer)[0]


def test_kept_adapters_load_with_peft_and_reproduce_the_adapted_answers(tiny_dir, passages_file, tmp_path):
    from peft import PeftModel

    from seal.domains import knowledge
    from seal.engine.sampling import continuation_logprobs
    from seal.models import load_model

    out = tmp_path / "run"
    args = tiny_eval_args(tiny_dir, passages_file, out, "--conditions", "passage", "--set", "adapt.keep_adapters=true")
    assert runner.invoke(app, args).exit_code == 0
    saved = sorted((out / "adapters").iterdir())
    assert [p.name for p in saved] == ["passage__p0__0", "passage__p1__0"]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    recorded = next(r for r in records if r["condition"] == "passage" and r["passage"] == "p0")
    lm = load_model(str(tiny_dir), dtype="float32")
    passage = knowledge.load_passages(passages_file)[0]
    prompt = knowledge.answer_prompt(lm, passage, passage.questions[0])
    gold = knowledge.gold_continuation(lm, passage.questions[0])
    base = continuation_logprobs(lm, [prompt], [gold])[0][0]
    lm.model = PeftModel.from_pretrained(lm.model, saved[0])
    adapted = continuation_logprobs(lm, [prompt], [gold])[0][0]
    assert adapted == pytest.approx(recorded["logprob"], abs=1e-3)  # plain peft reproduces the engine's score
    assert adapted != pytest.approx(base, abs=1e-3)


def test_a_section_given_in_part_keeps_the_commands_defaults_for_the_rest(tmp_path):

    cfg = load_config(ArcTrainConfig, None, ["adapt.lora.rank=8", "train_data.tasks=2", "policy.lora.rank=4"])
    assert cfg.adapt.lora.rank == 8 and cfg.adapt.lora.alpha == 16 and cfg.adapt.batch_size == 2  # ARC settings kept
    assert "training_challenges" in cfg.train_data.challenges and cfg.train_data.tasks == 2
    assert cfg.policy.lora.alpha == 128
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sampling:\n  max_new_tokens: 16\n")
    assert load_config(ArcEvalConfig, recipe).sampling.batch_size == 8
    with pytest.raises(ValueError, match="extra"):
        load_config(ArcEvalConfig, None, ["adapt.lora.rnak=8"])


def test_grade_check_measures_a_local_grader_and_an_llm_judge_against_judged_answers(
    judge_server, tmp_path, monkeypatch
):
    rows = [
        ("Who won?", "Denver Broncos", "The Denver Broncos won.", True),
        ("Who won?", "Denver Broncos", "The Broncos.", True),  # containment misses it
        ("Where?", "Santa Clara", "In San Jose.", False),
        ("Where?", "Santa Clara", "Santa Clara, I think not.", False),  # containment says yes
    ]
    judged = tmp_path / "judged.jsonl"
    judged.write_text(
        "".join(json.dumps({"question": q, "gold": g, "answer": a, "verdict": v}) + "\n" for q, g, a, v in rows)
    )

    result = runner.invoke(app, ["grade-check", str(judged), "--grader", "contains", "--part", "all"])
    assert result.exit_code == 0, result.output
    assert "0.500" in result.output  # 2 of 4 agree
    assert "gold='Denver Broncos' answer='The Broncos.'" in result.output  # a disagreement shown

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr("seal.grading.judge.time.sleep", lambda s: None)
    args = [
        "grade-check",
        str(judged),
        "--grader",
        "judge",
        "--part",
        "all",
        "--judge-url",
        judge_server,
        "--judge-model",
        "m",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "0.500" in result.output  # the loopback judge grades by containment too
    assert len(FakeJudge.calls) == 5  # four verdicts, one retried 503


def test_grade_check_refuses_bad_input_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(app, ["grade-check", str(bad)])
    assert result.exit_code != 0 and "not valid JSON" in result.output
    result = runner.invoke(app, ["grade-check", str(bad), "--fit-with", str(bad)])
    assert result.exit_code != 0 and "--fit-with needs --fit" in result.output
    null_answer = tmp_path / "null.jsonl"
    null_answer.write_text(json.dumps({"question": "Who?", "gold": "Ada", "answer": None, "verdict": True}) + "\n")
    result = runner.invoke(app, ["grade-check", str(null_answer), "--part", "all"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and "a row's answer is NoneType, not text" in output and "Traceback" not in output
    shapeless = tmp_path / "list.json"
    shapeless.write_text("[1, 2]")
    result = runner.invoke(app, ["grade-check", str(shapeless)])
    assert result.exit_code == 2 and "not a judged-answers file" in result.output


def test_data_fictional_writes_the_same_file_for_the_same_seed_and_refuses_a_bad_config(tmp_path):
    from seal.domains.knowledge import load_passages

    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path in paths:
        result = runner.invoke(app, ["data", "fictional", "--passages", "3", "--seed", "7", "--out", str(path)])
        assert result.exit_code == 0, result.output
    assert paths[0].read_bytes() == paths[1].read_bytes() and len(load_passages(paths[0])) == 3
    disjoint = tmp_path / "c.json"
    result = runner.invoke(app, ["data", "fictional", "--passages", "3", "--seed", "7", "--exclude", str(paths[0]),
                                 "--out", str(disjoint)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {p.title for p in load_passages(disjoint)}.isdisjoint(p.title for p in load_passages(paths[0]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_facts: 6\nmax_facts: 4\n")
    result = runner.invoke(app, ["data", "fictional", "-c", str(bad), "--out", str(tmp_path / "d.json")])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_data_fictional_prose_command_in_its_readme_reproduces_the_shipped_files(tmp_path):
    readme = (ROOT / "data" / "fictional-prose" / "README.md").read_text()
    block = re.search(r"## Regenerate\s+```bash\n(.*?)```", readme, re.S).group(1)
    args = shlex.split(block.replace("\\\n", " "))
    assert args[:4] == ["PYTHONPATH=src", "python3", "-m", "seal"]
    args = [str(tmp_path) if a == "data/fictional-prose" else str(ROOT / a) if a.startswith("data/") else a
            for a in args[4:]]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for split in ("eval", "val", "train"):
        shipped = ROOT / "data" / "fictional-prose" / f"{split}.json"
        assert (tmp_path / f"{split}.json").read_bytes() == shipped.read_bytes(), f"{shipped}: regenerate it"
    one = tmp_path / "one.json"
    result = runner.invoke(app, ["data", "fictional", "--style", "prose", "--passages", "2", "--out", str(one)])
    assert result.exit_code == 0 and len(json.loads(one.read_text())) == 2
    result = runner.invoke(app, ["data", "fictional", "--style", "verse", "--out", str(one)])
    assert result.exit_code == 2 and "--style is facts or prose" in result.output and "Traceback" not in result.output
