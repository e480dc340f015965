"""Data sets by name: fetched from a mirror or over HTTP, checked by sha256, named in configs as DATASET:PATH."""

import functools
import hashlib
import shutil
import socket
import threading
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA
from seal.cli import app
from seal.datasets import DATA_ENV, DATASETS, RELEASE, data_dir, fetch, locate
from seal.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def said(output: str) -> str:
    """A command's output with the terminal's line wrapping undone."""
    return " ".join(output.split())


@pytest.fixture
def empty_data(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "data"
    monkeypatch.setenv(DATA_ENV, str(directory))
    return directory


@pytest.fixture
def mirror(tmp_path, shared_data) -> Path:
    """A writable copy of the mirror's ARC folder (the smallest data set with large files)."""
    root = tmp_path / "mirror"
    shutil.copytree(shared_data / "arc", root / "arc")
    return root


def test_the_manifest_holds_every_file_of_the_mirror_with_its_sha256(shared_data):
    for spec in DATASETS.values():
        on_disk = {p.relative_to(shared_data / spec.folder).as_posix() for p in (shared_data / spec.folder).rglob("*")}
        assert {p for p in on_disk if (shared_data / spec.folder / p).is_file()} == set(spec.files)
        for entry in spec.files.values():
            data = (shared_data / spec.folder / entry.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.size
    assert len(RELEASE["commit"]) == 40 and RELEASE["commit"] in RELEASE["url"]


def test_a_name_is_a_fetched_file_and_a_plain_path_stays_a_path(seal_data, tmp_path):
    assert locate("squad:squad_val.json") == seal_data / "squad" / "squad_val.json"
    assert locate("seal-results:eval/base.json").is_file()
    assert locate(tmp_path / "mine.json") == tmp_path / "mine.json"
    assert locate("data/fictional/eval.json") == Path("data/fictional/eval.json")
    assert locate("C:/data/x.json") == Path("C:/data/x.json")  # not a data set's name
    with pytest.raises(DataError, match="no file 'nope.json'"):
        locate("squad:nope.json")


def test_a_data_set_not_fetched_is_one_error_naming_the_command_that_fetches_it(empty_data):
    with pytest.raises(DataError, match="run `seal data fetch arc-agi`"):
        locate("arc-agi:arc-agi_training_challenges.json")
    assert data_dir() == empty_data


def test_from_an_empty_directory_the_recipes_fail_until_fetched_then_run(empty_data, tmp_path, tiny_dir, monkeypatch):
    """A clone with no data beside it: the SQuAD demo and the ARC recipe on the curated ARC-AGI tasks name the fetch,
    then run after it."""
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "configs", clone / "configs")
    monkeypatch.chdir(clone)
    tiny = ["--model", str(tiny_dir), "--set", "model.dtype=float32", "--set", "sampling.max_new_tokens=8"]
    squad = ["knowledge", "eval", "-c", "configs/cpu-squad-demo.yaml", "--out", str(tmp_path / "squad"), *tiny]
    squad += ["--passages", "1", "--set", "adapt.epochs=1", "--set", "answer.max_new_tokens=4"]
    arc = ["arc", "eval", "-c", "configs/cpu-arc.yaml", "--out", str(tmp_path / "arc"), "--k", "1", *tiny]
    arc += ["--set", "ttt.views=1", "--set", "ttt.max_examples=2", "--set", "ttt.max_output_tokens=16"]
    arc += ["--set", "oracle.epochs=1", "--set", "ttt.max_tokens=500"]
    # the recipe's own tasks ship in the repository (data/arc-gen); the paper's curated ARC-AGI tasks are fetched
    curated = "arc-agi:arc-agi_evaluation_{}_filtered_1B_eval_set.json"
    arc += ["--set", "data.challenges=" + curated.format("challenges"), "--set", 'data.ids=["59341089"]']
    arc += ["--set", "data.solutions=" + curated.format("solutions")]
    for args, name in ((squad, "squad"), (arc, "arc-agi")):
        missing = runner.invoke(app, args)
        assert missing.exit_code == 2 and f"run `seal data fetch {name}`" in said(missing.output), missing.output
        assert said(missing.output).count("error:") == 1
        fetched = runner.invoke(app, ["data", "fetch", name, "--from", str(SHARED_DATA)])
        assert fetched.exit_code == 0 and f"{len(DATASETS[name].files)} files fetched" in fetched.output
        ran = runner.invoke(app, args)
        assert ran.exit_code == 0, ran.output
        assert (Path(args[args.index("--out") + 1]) / "results.json").exists()
    saved = (tmp_path / "squad" / "config.yaml").read_text()
    assert "data: squad:squad_val.json" in saved  # the record keeps the name, not this machine's path


def test_a_damaged_mirror_file_fails_its_sha256_and_takes_no_place(empty_data, mirror):
    damaged = mirror / "arc" / "arc-agi_evaluation_solutions.json"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b" ")
    with pytest.raises(DataError, match="sha256 .* is not the manifest's") as err:
        fetch("arc-agi", mirror=mirror)
    assert str(damaged) in str(err.value)
    folder = empty_data / "arc"
    assert not (folder / damaged.name).exists() and not list(folder.glob("*.part"))
    result = runner.invoke(app, ["data", "fetch", "arc-agi", "--from", str(mirror)])
    assert result.exit_code == 2 and said(result.output).count("error:") == 1 and "sha256" in result.output


def test_an_interrupted_fetch_resumes_with_the_files_it_lacks(empty_data, mirror):
    first = fetch("arc-agi", mirror=mirror)
    assert (first.copied, first.kept) == (8, 0)
    folder = empty_data / "arc"
    (folder / "arc-agi_training_solutions.json").unlink()
    (folder / "arc-agi_training_solutions.json.part").write_text("half a file")  # left by a killed fetch
    shorter = folder / "arc-agi_evaluation_solutions.json"
    shorter.write_bytes(shorter.read_bytes()[:100])
    again = fetch("arc-agi", mirror=mirror)
    assert (again.copied, again.kept) == (2, 6)
    assert not list(folder.glob("*.part"))
    assert (
        locate("arc-agi:arc-agi_training_solutions.json").read_bytes()
        == (mirror / "arc" / "arc-agi_training_solutions.json").read_bytes()
    )


@pytest.fixture
def release_server(tmp_path, shared_data):
    """A loopback HTTP server laid out like the SEAL release repository (as raw.githubusercontent.com
    serves it at the pinned commit), holding the mirror's files; it records the paths asked for."""
    root = tmp_path / "release"
    for spec in DATASETS.values():
        for entry in spec.files.values():
            (root / entry.source).parent.mkdir(parents=True, exist_ok=True)
            (root / entry.source).symlink_to(shared_data / spec.folder / entry.path)
    asked: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            asked.append(self.path)

    server = HTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", root, asked
    server.shutdown()


def test_a_fetch_downloads_the_release_files_and_checks_each(empty_data, release_server):
    url, root, asked = release_server
    result = runner.invoke(app, ["data", "fetch", "seal-results", "arc-agi", "--url", url])
    assert result.exit_code == 0, result.output
    expected = [e.source for n in ("seal-results", "arc-agi") for e in DATASETS[n].files.values()]
    assert sorted(p.lstrip("/") for p in asked) == sorted(expected)
    assert locate("seal-results:cpt/cpt_base.json").read_bytes() == (SHARED_DATA / "reference-results" / "cpt" /
                                                                     "cpt_base.json").read_bytes()  # fmt: skip
    source = root / DATASETS["squad"].files["squad_val.json"].source
    source.unlink()
    source.write_text("[]")  # the server's copy is not the release's file
    with pytest.raises(DataError, match="sha256"):
        fetch("squad", url=url)
    assert not (empty_data / "squad" / "squad_val.json").exists()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_source_is_one_error_that_points_at_a_mirror(empty_data, closed_port, tmp_path):
    result = runner.invoke(app, ["data", "fetch", "arc-agi", "--url", f"http://127.0.0.1:{closed_port}/"])
    assert result.exit_code == 2 and "cannot download" in result.output and "--from DIR" in said(result.output)
    missing = runner.invoke(app, ["data", "fetch", "arc-agi", "--from", str(tmp_path)])
    assert missing.exit_code == 2 and "not a data mirror" in said(missing.output)
    itself = runner.invoke(app, ["data", "fetch", "arc-agi", "--from", str(empty_data)])
    assert itself.exit_code == 2 and "the data directory itself" in said(itself.output)
    unknown = runner.invoke(app, ["data", "fetch", "imagenet"])
    assert unknown.exit_code == 2 and "the data sets are squad, seal-results, arc-agi" in said(unknown.output)


def test_list_tells_each_data_set_its_licence_and_what_is_fetched(empty_data):
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0
    text = said(result.output)
    assert "CC BY-SA 4.0" in text and "Apache 2.0" in text and "MIT" in text and "0 fetched" in text
    assert str(empty_data) in text
    files = runner.invoke(app, ["data", "list", "squad"])
    assert "squad:synthetic/eval/gpt4_1_val.json" in said(files.output)
    help_text = said(runner.invoke(app, ["data", "fetch", "--help"]).output)
    assert "squad: CC BY-SA 4.0" in help_text and "arc-agi: Apache 2.0" in help_text
