"""Runs on a real local Ray cluster (a head and a second node on loopback, one CPU each) and on
worker processes: the same records as in-process, and a run that survives a worker killed
mid-round."""

import json
import math
import operator

import pytest
import ray
import torch
from ray.cluster_utils import Cluster

from seal import cluster as seal_cluster
from seal.config import (
    ArcEvalConfig,
    ExecutorConfig,
    KnowledgeEvalConfig,
    KnowledgeTrainConfig,
    ModelConfig,
    load_config,
)
from seal.engine.loop import adapt_batch
from seal.experiments.arc import ArcEval
from seal.experiments.knowledge_train import KnowledgeTrain
from seal.models import ModelLoadError, ModelOnDemand


@pytest.fixture(scope="module")
def ray_cluster():
    local = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    local.add_node(num_cpus=1)
    ray.init(address=local.address, log_to_driver=False)
    yield local
    ray.shutdown()
    local.shutdown()


@pytest.fixture
def one_thread():
    """Ray actors compute with one thread each; the in-process reference does the same, so sums
    are reduced in the same order and the two runs can be compared exactly."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def close(a, b) -> bool:
    """Equal records: same texts and structure, floats equal to 1e-5."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a if "seconds" not in k)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5) or (math.isnan(a) and math.isnan(b))
    return a == b


def records(run) -> dict:
    return {kind: run.store.all(kind) for kind in ("answers", "self_edits", "selections", "adapt")}


def knowledge_cfg(tiny_dir, files, executor: str) -> KnowledgeTrainConfig:
    sets = [
        f"model.name={tiny_dir}",
        f"train_data={files[0]}",
        f"eval_data={files[1]}",
        "train_passages=3",
        "eval_passages=2",
        "rounds=1",
        "sampling.k=2",
        "adapt.epochs=2",
        "adapt.lora.rank=4",
        "adapt.slots=2",
        "adapt.refill=1",
        "policy.lora.rank=4",
        "sampling.max_new_tokens=16",
        "answer.max_new_tokens=6",
        "model.dtype=float32",
        "reward=loglik",
        "policy.lr=1e-2",
        "policy.batch_size=1",
        f"executor.kind={executor}",
        "executor.workers=2",
    ]
    return load_config(KnowledgeTrainConfig, None, sets)


@pytest.fixture
def knowledge_files(tmp_path, passages3):
    data = json.loads(passages3.read_text())
    train, held_out = tmp_path / "train.json", tmp_path / "eval.json"
    train.write_text(json.dumps(data[:2] + data[:1]))  # 3 training passages (one repeated: its own key)
    held_out.write_text(json.dumps(data[2:]))
    return train, held_out


def test_a_rest_em_round_on_ray_records_what_the_local_executor_records(
    ray_cluster, one_thread, tiny_dir, knowledge_files, tmp_path
):
    local = KnowledgeTrain(knowledge_cfg(tiny_dir, knowledge_files, "local"), tmp_path / "local")
    local_results = local.run()
    remote = KnowledgeTrain(knowledge_cfg(tiny_dir, knowledge_files, "ray"), tmp_path / "ray")
    assert isinstance(remote.executor, seal_cluster.RayExecutor)
    remote_results = remote.run()
    assert close(records(local), records(remote))
    assert close(local_results, remote_results)
    assert (tmp_path / "ray" / "policy" / "round-1" / "adapter_model.safetensors").exists()


def lose_a_worker_mid_round(monkeypatch, executor_class, kill) -> list[int]:
    """Make the executor's map kill a worker with an adapt-and-score batch in flight, once."""
    real_map, killed = executor_class.map, []

    def map_that_loses_a_worker(self, fn, items, *args):
        for out in real_map(self, fn, items, *args):
            if fn is adapt_batch and not killed and self.pending:
                victim = next(iter(self.pending.values()))[0]  # a worker with work in flight
                kill(self.workers[victim])
                killed.append(victim)
            yield out

    monkeypatch.setattr(executor_class, "map", map_that_loses_a_worker)
    return killed


def test_an_actor_killed_mid_round_is_replaced_and_the_run_ends_with_the_same_records(
    ray_cluster, one_thread, tiny_dir, knowledge_files, tmp_path, monkeypatch
):
    reference = KnowledgeTrain(knowledge_cfg(tiny_dir, knowledge_files, "local"), tmp_path / "local")
    reference.run()
    killed = lose_a_worker_mid_round(
        monkeypatch, seal_cluster.RayExecutor, lambda actor: ray.kill(actor, no_restart=True)
    )
    run = KnowledgeTrain(knowledge_cfg(tiny_dir, knowledge_files, "ray"), tmp_path / "ray")
    run.run()
    assert killed and run.executor.replaced == 1
    assert close(records(reference), records(run))


def test_a_round_on_worker_processes_one_killed_mid_round_records_what_the_local_executor_records(
    one_thread, tiny_dir, knowledge_files, tmp_path, monkeypatch
):
    local = KnowledgeTrain(knowledge_cfg(tiny_dir, knowledge_files, "local"), tmp_path / "local")
    local_results = local.run()
    killed = lose_a_worker_mid_round(monkeypatch, seal_cluster.ProcessExecutor, lambda worker: worker.process.kill())
    run = KnowledgeTrain(knowledge_cfg(tiny_dir, knowledge_files, "processes"), tmp_path / "processes")
    assert isinstance(run.executor, seal_cluster.ProcessExecutor)
    results = run.run()
    assert killed and run.executor.replaced == 1
    assert close(records(local), records(run))
    assert close(local_results, results)
    assert not run.executor.workers  # closed: no worker process outlives the run


def test_a_pool_that_loses_more_workers_than_allowed_stops_the_run_and_the_same_run_resumes_to_the_same_records(
    one_thread, tiny_dir, knowledge_files, tmp_path, monkeypatch
):
    local = KnowledgeTrain(knowledge_cfg(tiny_dir, knowledge_files, "local"), tmp_path / "local")
    local.run()
    cfg = knowledge_cfg(tiny_dir, knowledge_files, "processes")
    cfg = cfg.model_copy(update={"executor": cfg.executor.model_copy(update={"max_replacements": 0})})
    with monkeypatch.context() as patch:
        killed = lose_a_worker_mid_round(patch, seal_cluster.ProcessExecutor, lambda worker: worker.process.kill())
        stopped = KnowledgeTrain(cfg, tmp_path / "processes")
        with pytest.raises(seal_cluster.ExecutorFailed, match="giving up"):
            stopped.run()
    assert killed and stopped.store.keys("answers")  # what was done before the loss is kept
    assert not stopped.executor.workers  # and no worker process outlives the stopped run
    resumed = KnowledgeTrain(cfg, tmp_path / "processes")
    resumed.run()
    assert close(records(local), records(resumed))


def test_a_worker_process_that_cannot_load_the_model_raises_the_loading_error(tmp_path):
    cfg = ExecutorConfig(kind="processes", workers=1)
    executor = seal_cluster.make_executor(cfg, ModelOnDemand(ModelConfig(name=str(tmp_path / "no-such-model"))))
    with pytest.raises(ModelLoadError, match="does not exist"):
        list(executor.map(adapt_batch, [[]]))
    executor.close()


def test_an_error_in_a_worker_process_is_raised_in_the_driver_and_the_worker_serves_on(tiny_dir):
    executor = seal_cluster.make_executor(
        ExecutorConfig(kind="processes", workers=1), ModelOnDemand(ModelConfig(name=str(tiny_dir)))
    )
    try:
        with pytest.raises(TypeError, match="not subscriptable") as raised:
            list(executor.map(operator.getitem, [0]))  # fn(lm, 0): lm[0]
        assert "in a worker process" in "".join(raised.value.__notes__)
        assert list(executor.map(getattr, ["name"])) == [("name", str(tiny_dir))]
        assert executor.replaced == 0
    finally:
        executor.close()


def arc_cfg(tiny_dir, executor: str) -> ArcEvalConfig:
    sets = [
        f"model.name={tiny_dir}",
        "data.ids=[59341089, 66e6c45b]",
        "k=1",
        "model.dtype=float32",
        "adapt.lora.rank=4",
        "ttt.max_examples=4",
        "ttt.views=2",
        "sampling.max_new_tokens=24",
        "ttt.max_output_tokens=24",
        "oracle.epochs=1",
        "ttt.max_tokens=500",
        f"executor.kind={executor}",
    ]
    return load_config(ArcEvalConfig, None, sets)


@pytest.mark.parametrize("executor", ["ray", "processes"])
def test_an_arc_evaluation_runs_on_a_pool(executor, request, one_thread, tiny_dir, tmp_path):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    local = ArcEval(arc_cfg(tiny_dir, "local"), tmp_path / "local").run()
    remote = ArcEval(arc_cfg(tiny_dir, executor), tmp_path / executor).run()
    assert remote["conditions"]["oracle"]["pairs"] == 2
    assert close(local["conditions"], remote["conditions"])


def test_worker_processes_report_the_tokens_they_train_before_their_unit_of_work_comes_back(
    tiny_dir, passages3, tmp_path, monkeypatch
):
    """Two worker processes, one unit of two plans each: the bar and `seal status` move while they train."""
    from seal.experiments import steps
    from seal.experiments.knowledge_eval import KnowledgeEval
    from seal.status import format_status, read_status

    events = []
    record = steps.record_training
    monkeypatch.setattr(steps, "record_training", lambda *a: (events.append(("tokens", a[2])), record(*a)))
    unit_done = steps.TrainingProgress.unit_done
    monkeypatch.setattr(steps.TrainingProgress, "unit_done", lambda self, u: (events.append(("unit", u)),
                                                                               unit_done(self, u)))  # fmt: skip
    sets = [f"model.name={tiny_dir}", f"data={passages3}", "passages=3", "paper_subset=false", "conditions=[passage]",
            "adapt.epochs=4", "adapt.lora.rank=4", "adapt.slots=2", "answer.max_new_tokens=4", "model.dtype=float32",
            "executor.kind=processes", "executor.workers=2"]  # fmt: skip
    run = KnowledgeEval(load_config(KnowledgeEvalConfig, None, sets), tmp_path / "run")
    assert isinstance(run.executor, seal_cluster.ProcessExecutor)
    run.run()
    first_unit = events.index(next(e for e in events if e[0] == "unit"))
    assert first_unit > 0 and events[0][0] == "tokens" and events[0][1] > 0  # tokens came before any unit
    phase = read_status(tmp_path / "run").phase
    trained, total, _ = phase.tokens
    assert trained == total > 0 and f"trained {total:,} of {total:,} tokens (100%)" in format_status(
        read_status(tmp_path / "run")
    )
