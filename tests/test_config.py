"""Loading autogolf.yaml: defaults, every bad value refused with its key named, edit rights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from loop.config import Config, ConfigError, ProfileConfig, glob_match, is_editable, load_config
from loop.proposers.search import Knob

REPO_ROOT = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "autogolf.yaml"
    path.write_text(text)
    return load_config(path)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


# --- defaults and the shipped file ---------------------------------------------------------


def test_missing_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.yaml") == Config()


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "# nothing but a comment\n") == Config()


def test_shipped_autogolf_yaml_states_exactly_the_defaults() -> None:
    assert load_config(REPO_ROOT / "autogolf.yaml") == Config()


def test_defaults_follow_the_spec() -> None:
    cfg = Config()
    assert (cfg.metric, cfg.direction) == ("val_bpb", "lower")
    assert cfg.min_improvement == 0.002
    assert cfg.artifact_cap_bytes == 16_000_000
    assert cfg.ladder == ("breadth", "confirm")
    assert {n: p.timeout_s for n, p in cfg.profiles.items()} == {
        "smoke": 300,
        "breadth": 900,
        "confirm": 2700,
        "full": 14400,
    }


def test_default_knobs_are_search_knobs_in_editable_files() -> None:
    cfg = Config()
    assert cfg.knobs and all(isinstance(k, Knob) for k in cfg.knobs)
    assert all(is_editable(cfg, k.file) for k in cfg.knobs)
    assert "SEED" not in {k.name for k in cfg.knobs}


def test_default_knobs_exist_in_the_knob_block_of_autoresearch_sh() -> None:
    script = (REPO_ROOT / "autoresearch.sh").read_text().splitlines()
    for knob in Config().knobs:
        assert any(line.startswith(f"{knob.name}=") for line in script), knob.name


# --- reading values ------------------------------------------------------------------------


def test_values_given_override_the_defaults(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
metric: {name: val_bpb, direction: lower}
min_improvement: 0.005
artifact_cap_bytes: 15_000_000
dataset: fineweb
ladder: [smoke]
full_every_keeps: 3
benchmark: {command: "bash bench.sh"}
checks: {command: "true", timeout_s: 30}
proposer: {name: search, seed: 7}
noise: {k: 3, fixed: {breadth: 0.01}}
stop: {max_consecutive_failures: 2, stop_file: STOP}
limits: {kill_grace_s: 2, max_memory_mb: 12000, min_available_memory_mb: 500}
""",
    )
    assert cfg.min_improvement == 0.005 and cfg.artifact_cap_bytes == 15_000_000
    assert cfg.dataset == "fineweb" and cfg.ladder == ("smoke",) and cfg.full_every_keeps == 3
    assert cfg.benchmark_command == "bash bench.sh"
    assert (cfg.checks_command, cfg.checks_timeout_s) == ("true", 30)
    assert (cfg.proposer, cfg.proposer_seed) == ("search", 7)
    assert cfg.noise_k == 3 and cfg.noise["breadth"] == 0.01 and cfg.noise["confirm"] == 0.002
    assert (cfg.max_consecutive_failures, cfg.stop_file) == (2, "STOP")
    assert (cfg.kill_grace_s, cfg.max_memory_mb, cfg.min_available_memory_mb) == (2, 12000, 500)


def test_a_profile_given_overrides_only_its_own_timeout(tmp_path: Path) -> None:
    cfg = load(tmp_path, "profiles:\n  breadth: {timeout_s: 600}\n  tiny: {timeout_s: 60}\n")
    assert cfg.profiles["breadth"] == ProfileConfig("breadth", 600)
    assert cfg.profiles["tiny"] == ProfileConfig("tiny", 60)
    assert cfg.profiles["confirm"].timeout_s == 2700


def test_shorthand_metric_and_proposer_names(tmp_path: Path) -> None:
    cfg = load(tmp_path, "metric: val_bpb\nproposer: search\n")
    assert cfg.metric == "val_bpb" and cfg.proposer == "search"


def test_knobs_given_replace_the_default_knobs(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
knobs:
  MATRIX_LR: {file: autoresearch.sh, kind: env, type: float, low: 0.01, high: 0.1, scale: log}
  NUM_LAYERS: {kind: const, type: int, low: 4, high: 12}
""",
    )
    assert cfg.knobs == (
        Knob("MATRIX_LR", "autoresearch.sh", "env", "float", 0.01, 0.1, "log"),
        Knob("NUM_LAYERS", "benchmark/train_gpt_mlx.py", "const", "int", 4, 12, "linear"),
    )


def test_empty_knobs_means_no_knobs(tmp_path: Path) -> None:
    assert load(tmp_path, "knobs:\n").knobs == ()


def test_config_can_be_copied_with_a_new_ladder() -> None:
    assert dataclasses.replace(Config(), ladder=("smoke",)).ladder == ("smoke",)


# --- refusals: each names the key path and what is allowed ----------------------------------


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    message = refused(tmp_path, "min_improvement: 0.002\nladder: [breadth, confirm\n")
    assert "autogolf.yaml" in message and "line 3" in message


def test_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    message = refused(tmp_path, "min_improvement: 0.002\nmin_improvement: 0.5\n")
    assert "duplicate key 'min_improvement'" in message and "line 2" in message


def test_unknown_top_level_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    message = refused(tmp_path, "min_improvment: 0.1\n")
    assert "min_improvment: unknown key; did you mean 'min_improvement'?" in message


def test_unknown_nested_key_is_refused_with_its_path(tmp_path: Path) -> None:
    message = refused(tmp_path, "profiles:\n  breadth: {timeot_s: 900}\n")
    assert "profiles.breadth.timeot_s: unknown key" in message
    assert "allowed: timeout_s" in message


def test_negative_timeout_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "profiles:\n  breadth: {timeout_s: -5}\n")
    assert "profiles.breadth.timeout_s: got -5 (allowed: a number > 0)" in message


def test_timeout_given_as_text_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "checks: {timeout_s: '2 minutes'}\n")
    assert "checks.timeout_s: got '2 minutes'" in message


def test_boolean_is_not_a_number(tmp_path: Path) -> None:
    assert "min_improvement: got True" in refused(tmp_path, "min_improvement: yes\n")


def test_fractional_byte_cap_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "artifact_cap_bytes: 1.5\n")
    assert "artifact_cap_bytes: got 1.5 (allowed: a whole number >= 1)" in message


def test_unknown_profile_in_the_ladder_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "ladder: [breadth, confrim]\n")
    assert "ladder[1]: unknown profile 'confrim'" in message
    assert "smoke, breadth, confirm, full" in message


def test_empty_ladder_is_refused(tmp_path: Path) -> None:
    assert "ladder: got []" in refused(tmp_path, "ladder: []\n")


def test_a_rung_twice_is_refused(tmp_path: Path) -> None:
    assert "ladder: a profile appears twice" in refused(tmp_path, "ladder: [breadth, breadth]\n")


def test_unknown_dataset_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    message = refused(tmp_path, "dataset: imagenet\n")
    assert "dataset: unknown dataset 'imagenet'" in message and "sample" in message


def test_a_dataset_folder_with_its_tokenizer_is_accepted(tmp_path: Path) -> None:
    from loop.data.datasets import DatasetFolder

    cfg = load(tmp_path, "dataset:\n  path: /data/fineweb10B_sp1024\n"
                         "  tokenizer: /data/tokenizers/fineweb_1024_bpe.model\n")
    assert cfg.dataset == DatasetFolder("/data/fineweb10B_sp1024",
                                        "/data/tokenizers/fineweb_1024_bpe.model")


def test_a_dataset_mapping_without_a_path_is_refused_showing_the_shape(tmp_path: Path) -> None:
    message = refused(tmp_path, "dataset: {tokenizer: /t.model}\n")
    assert "dataset: got {'tokenizer': '/t.model'}" in message
    assert "{path: /data/fineweb10B_sp1024, tokenizer:" in message


def test_unknown_direction_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "metric: {name: val_bpb, direction: down}\n")
    assert "metric.direction: got 'down' (allowed: lower | higher)" in message


def test_higher_is_better_is_refused_because_the_judge_scores_val_bpb(tmp_path: Path) -> None:
    message = refused(tmp_path, "metric: {name: val_bpb, direction: higher}\n")
    assert "metric.direction: got 'higher': val_bpb is better when lower" in message


def test_a_metric_other_than_val_bpb_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "metric: {name: val_loss}\n")
    assert "metric.name: got 'val_loss': the keep rule judges val_bpb only" in message


def test_unknown_proposer_is_refused(tmp_path: Path) -> None:
    assert "proposer.name: got 'gpt'" in refused(tmp_path, "proposer: gpt\n")


def test_empty_benchmark_command_is_refused(tmp_path: Path) -> None:
    assert "benchmark.command: got ''" in refused(tmp_path, "benchmark: {command: ''}\n")


def test_globs_that_are_not_a_list_are_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "editable: autoresearch.sh\n")
    assert "editable: expected a list, got str" in message


def test_glob_leaving_the_repository_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "editable: [autoresearch.sh, ../outside.py, /etc/passwd]\n")
    assert "editable[1]: got '../outside.py'" in message
    assert "editable[2]: got '/etc/passwd'" in message


def test_malformed_glob_is_refused(tmp_path: Path) -> None:
    assert "protected[0]: bad glob" in refused(tmp_path, "protected: ['data/[abc']\n")


def test_knob_with_low_not_below_high_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "knobs:\n  MATRIX_LR: {low: 0.1, high: 0.1}\n")
    assert "knobs.MATRIX_LR: low 0.1 >= high 0.1" in message


def test_log_knob_with_a_non_positive_low_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "knobs:\n  GRAD_CLIP_NORM: {low: 0, high: 1, scale: log}\n")
    assert "knobs.GRAD_CLIP_NORM: low 0 with scale: log" in message


def test_int_knob_with_fractional_bounds_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "knobs:\n  MLP_MULT: {type: int, low: 1.5, high: 4}\n")
    assert "knobs.MLP_MULT: type: int with fractional bounds" in message


def test_knob_without_bounds_is_refused(tmp_path: Path) -> None:
    assert "knobs.MATRIX_LR.high: missing" in refused(tmp_path, "knobs:\n  MATRIX_LR: {low: 1}\n")


def test_knob_with_a_bad_kind_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "knobs:\n  X: {kind: yaml, low: 1, high: 2}\n")
    assert "knobs.X.kind: got 'yaml' (allowed: env | const)" in message


def test_knob_in_a_protected_file_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "knobs:\n  X: {file: loop/ui/cli.py, low: 1, high: 2}\n")
    assert "knobs.X.file: 'loop/ui/cli.py' is not an editable file" in message


def test_seed_cannot_be_a_knob(tmp_path: Path) -> None:
    assert "knobs.SEED: the seed is frozen" in refused(
        tmp_path, "knobs:\n  SEED: {low: 1, high: 9999, type: int}\n"
    )


def test_noise_for_an_unknown_profile_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "noise: {fixed: {breadht: 0.01}}\n")
    assert "noise.fixed.breadht: unknown profile" in message


def test_negative_noise_is_refused(tmp_path: Path) -> None:
    assert "noise.fixed.breadth: got -0.1" in refused(tmp_path, "noise: {fixed: {breadth: -0.1}}\n")


def test_full_schedule_uses_the_default_full_profile(tmp_path: Path) -> None:
    assert load(tmp_path, "full_every_keeps: 2\n").profiles["full"].timeout_s == 14400


def test_zero_consecutive_failures_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "stop: {max_consecutive_failures: 0}\n")
    assert "stop.max_consecutive_failures: got 0 (allowed: a whole number >= 1)" in message


def test_section_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    assert "profiles: expected a mapping, got list" in refused(tmp_path, "profiles: [breadth]\n")


def test_top_level_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    assert "(top level): expected a mapping" in refused(tmp_path, "- breadth\n- confirm\n")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "min_improvement: -1\nladder: [nope]\ncolour: blue\n")
    assert len(info.value.problems) == 3
    assert all(str(tmp_path / "autogolf.yaml") in line for line in info.value.problems)


# --- edit rights -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "autoresearch.sh",
        "autoresearch.checks.sh",
        "autoresearch.md",
        "autoresearch.ideas.md",
        "benchmark/train_gpt_mlx.py",
        "scripts/extract_parameter_golf_metrics.py",
        "./autoresearch.sh",
    ],
)
def test_spec_editable_files_are_editable(path: str) -> None:
    assert is_editable(Config(), path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "autogolf.yaml",
        "benchmark/UPSTREAM_COMMIT.txt",
        "scripts/bootstrap-parameter-golf.sh",
        "loop/judge/decision.py",
        "tests/test_config.py",
        "README.md",
        "Justfile",
        ".autogolf/ledger.jsonl",
        "data/datasets/sample_sp1024/fineweb_val_000000.bin",
        "logs/run.txt",
        "benchmark/other.py",
        "../autoresearch.sh",
        "/abs/autoresearch.sh",
        "autoresearch.sh ",  # another file than autoresearch.sh
        "",
    ],
)
def test_everything_else_is_not_editable(path: str) -> None:
    assert not is_editable(Config(), path)


def test_protected_wins_over_editable() -> None:
    cfg = Config(editable=("benchmark/**",), protected=("benchmark/UPSTREAM_COMMIT.txt",))
    assert is_editable(cfg, "benchmark/train_gpt_mlx.py")
    assert not is_editable(cfg, "benchmark/UPSTREAM_COMMIT.txt")


def test_daemon_files_stay_protected_whatever_the_config_says() -> None:
    cfg = Config(editable=("**",), protected=())
    assert is_editable(cfg, "notes.md")
    for path in ("autogolf.yaml", "loop/judge/decision.py", ".autogolf/ledger.jsonl",
                 ".git/config"):
        assert not is_editable(cfg, path), path


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("benchmark/*.py", "benchmark/train.py", True),
        ("benchmark/*.py", "benchmark/sub/train.py", False),
        ("benchmark/**", "benchmark/sub/train.py", True),
        ("**/*.model", "tokenizer.model", True),
        ("**/*.model", "data/tokenizers/sp.model", True),
        ("data/", "data/x/y.bin", True),
        ("file?.txt", "file1.txt", True),
        ("file[!0-9].txt", "file1.txt", False),
        (".autogolf/**", ".autogolf/lock", True),
        ("./autoresearch.sh", "autoresearch.sh", True),
    ],
)
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


# --- keep_rule (issue 16) ---------------------------------------------------------------------


def test_keep_rule_settings_are_read_and_build_each_profiles_rule(tmp_path: Path) -> None:
    cfg = load(tmp_path, "keep_rule: {alpha: 0.01, beta: 0.2, min_runs: 3, "
                         "max_runs: {confirm: 4, full: 3}, max_pooled_dof: 20}\n")
    rule = cfg.sequential_rule("confirm")
    assert (rule.alpha, rule.beta, rule.min_runs, rule.max_runs) == (0.01, 0.2, 3, 4)
    assert cfg.keep_max_runs["breadth"] == 10 and cfg.keep_max_pooled_dof == 20


def test_futility_and_pruning_are_read_and_reach_the_rule(tmp_path: Path) -> None:
    cfg = load(tmp_path, "keep_rule: {futility: 0, prune: false}\n")
    assert cfg.sequential_rule("breadth").futility == 0 and cfg.keep_prune is False
    default = load(tmp_path, "keep_rule: {}\n")
    assert default.sequential_rule("breadth").futility == 0.30 and default.keep_prune is True


def test_curtailment_is_read_and_reaches_the_rule(tmp_path: Path) -> None:
    assert load(tmp_path, "keep_rule: {curtail: 0}\n").sequential_rule("smoke").curtail == 0
    assert load(tmp_path, "keep_rule: {}\n").sequential_rule("smoke").curtail == 0.03


def test_keep_rule_max_runs_as_one_number_applies_to_every_profile(tmp_path: Path) -> None:
    cfg = load(tmp_path, "keep_rule: {max_runs: 5}\n")
    assert set(cfg.keep_max_runs.values()) == {5}


@pytest.mark.parametrize(("text", "message"), [
    ("keep_rule: {alpha: 0.5}", "keep_rule.alpha: got 0.5 (allowed: a rate in (0, 0.5)"),
    ("keep_rule: {alpha: 0}", "keep_rule.alpha: got 0"),
    ("keep_rule: {beta: -0.1}", "keep_rule.beta: got -0.1"),
    ("keep_rule: {min_runs: 1}", "keep_rule.min_runs: got 1 (allowed: a whole number >= 2)"),
    ("keep_rule: {max_runs: {breadth: 1}}", "keep_rule.max_runs.breadth: got 1"),
    ("keep_rule: {max_runs: {breadht: 8}}", "keep_rule.max_runs.breadht: unknown profile"),
    ("keep_rule: {min_runs: 4, max_runs: 3}", "keep_rule.max_runs: got 3 < min_runs 4"),
    ("keep_rule: {min_runs: 3}", "keep_rule.max_runs.full: got 2 (the default) < min_runs 3"),
    ("keep_rule: {max_pooled_dof: 0}", "keep_rule.max_pooled_dof: got 0"),
    ("keep_rule: {alfa: 0.01}", "keep_rule.alfa: unknown key; did you mean 'alpha'?"),
    ("keep_rule: {promote_inconclusive: 1}", "keep_rule.promote_inconclusive: got 1"),
    ("keep_rule: {enabled: yes please}", "keep_rule.enabled: got 'yes please'"),
    ("keep_rule: {futility: 0.5}", "keep_rule.futility: got 0.5 (allowed: a rate in [0, 0.5)"),
    ("keep_rule: {prune: maybe}", "keep_rule.prune: got 'maybe'"),
    ("keep_rule: {curtail: 0.6}", "keep_rule.curtail: got 0.6 (allowed: a chance in [0, 0.5)"),
])
def test_bad_keep_rule_settings_are_refused_naming_the_key(tmp_path: Path, text: str,
                                                            message: str) -> None:
    assert message in refused(tmp_path, text + "\n")


# --- search strategy and storage (issue 17) ------------------------------------------------------


def test_search_strategy_and_storage_are_read(tmp_path: Path) -> None:
    cfg = load(tmp_path, "search: {strategy: random, storage: 'postgresql://u@db/golf'}\n")
    assert (cfg.search_strategy, cfg.search_storage) == ("random", "postgresql://u@db/golf")


def test_search_storage_defaults_to_none_meaning_sqlite_under_autogolf(tmp_path: Path) -> None:
    assert load(tmp_path, "search: {strategy: local}\n").search_storage is None


def test_unknown_search_strategy_is_refused_naming_the_key(tmp_path: Path) -> None:
    message = refused(tmp_path, "search: {strategy: cmaes}\n")
    assert "search.strategy" in message and "local | random | tpe" in message


def test_a_storage_that_is_not_a_url_is_refused_naming_the_key(tmp_path: Path) -> None:
    message = refused(tmp_path, "search: {storage: .autogolf/optuna.db}\n")
    assert "search.storage" in message and "sqlite:///" in message


def test_a_knob_step_is_read(tmp_path: Path) -> None:
    cfg = load(tmp_path, "knobs:\n  MODEL_DIM: {type: int, low: 256, high: 768, step: 64}\n")
    assert cfg.knobs[0].step == 64


def test_a_step_that_does_not_divide_the_range_is_refused_naming_the_knob(tmp_path: Path) -> None:
    message = refused(tmp_path, "knobs:\n  MODEL_DIM: {type: int, low: 256, high: 700, step: 64}\n")
    assert "knobs.MODEL_DIM" in message and "whole number of steps" in message


def test_a_step_on_a_log_knob_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, "knobs:\n  LR: {low: 0.01, high: 0.1, scale: log, step: 0.01}\n")
    assert "knobs.LR" in message and "scale: linear" in message


# --- profile timeouts per device class -------------------------------------------------------

PER_DEVICE = "profiles:\n  breadth:\n    timeout_s: {default: 900, cuda: 300, cpu: 7200}\n"


def test_profile_timeout_is_the_device_classes_own_value(tmp_path):
    (tmp_path / "autogolf.yaml").write_text(PER_DEVICE)
    cfg = load_config(tmp_path / "autogolf.yaml", device="cuda")
    assert cfg.profiles["breadth"].timeout_s == 300
    assert cfg.device_class == "cuda"


def test_device_class_without_its_own_timeout_gets_the_default(tmp_path):
    (tmp_path / "autogolf.yaml").write_text(PER_DEVICE)
    cfg = load_config(tmp_path / "autogolf.yaml", device="metal")
    assert cfg.profiles["breadth"].timeout_s == 900
    assert cfg.profiles["confirm"].timeout_s == 2700  # a plain number: every device


def test_device_named_in_the_file_picks_the_timeouts(tmp_path):
    assert load(tmp_path, "device: cpu\n" + PER_DEVICE).profiles["breadth"].timeout_s == 7200


def test_device_auto_asks_mlx_which_class_this_machine_trains_on(tmp_path, monkeypatch):
    import loop.platform

    monkeypatch.setattr(loop.platform, "device_class", lambda: "cuda")
    assert load(tmp_path, PER_DEVICE).profiles["breadth"].timeout_s == 300


def test_device_auto_on_this_machine_resolves_to_what_mlx_reports(tmp_path):
    import mlx.core as mx

    cfg = load(tmp_path, PER_DEVICE)
    if mx.default_device() == mx.cpu:
        assert cfg.device_class == "cpu"
    else:
        assert cfg.device_class in ("metal", "cuda")


def test_plain_timeouts_need_no_device_probe(tmp_path, monkeypatch):
    import loop.platform

    def no_probe():
        raise AssertionError("probed the device for plain timeouts")

    monkeypatch.setattr(loop.platform, "device_class", no_probe)
    cfg = load(tmp_path, "profiles:\n  breadth: {timeout_s: 600}\n")
    assert (cfg.profiles["breadth"].timeout_s, cfg.device_class) == (600, None)


def test_per_device_timeouts_without_a_default_are_refused(tmp_path):
    message = refused(tmp_path, "profiles:\n  breadth:\n    timeout_s: {cuda: 300}\n")
    assert "profiles.breadth.timeout_s.default: missing" in message


def test_unknown_device_class_in_a_timeout_is_refused_with_a_suggestion(tmp_path):
    message = refused(tmp_path, "profiles:\n  breadth:\n    timeout_s: {default: 9, cdua: 3}\n")
    assert "profiles.breadth.timeout_s.cdua: unknown key; did you mean 'cuda'?" in message


def test_non_positive_device_timeout_is_refused(tmp_path):
    message = refused(tmp_path, "profiles:\n  breadth:\n    timeout_s: {default: 9, cuda: 0}\n")
    assert "profiles.breadth.timeout_s.cuda: got 0 (allowed: a number > 0)" in message


def test_unknown_device_is_refused_with_the_choices(tmp_path):
    message = refused(tmp_path, "device: gpu\n")
    assert "device: got 'gpu' (allowed: auto | cpu | metal | cuda)" in message


# --- the configuration sits on the ground -------------------------------------------------------


def test_loading_the_configuration_imports_no_feature_of_the_daemon() -> None:
    import subprocess
    import sys

    code = ("import sys, loop.config; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('loop'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout.split()
    ground = {"loop", "loop.config", "loop.errors", "loop.platform", "loop.judge",
              "loop.judge.sequential", "loop.judge.distributions"}
    assert [m for m in out if m not in ground and not m.startswith("loop.settings")] == []


def test_a_bad_keep_rule_rate_is_refused_by_the_rule_itself_naming_the_key(tmp_path: Path) -> None:
    message = refused(tmp_path, "keep_rule: {alpha: 0.7, beta: 0, futility: -1}\n")
    assert all(f"keep_rule.{key}: got" in message for key in ("alpha", "beta", "futility"))


def test_a_knob_refused_by_its_own_declaration_names_the_knob(tmp_path: Path) -> None:
    message = refused(tmp_path, "knobs:\n  MATRIX-LR: {low: 0.01, high: 0.1}\n")
    assert "knobs.MATRIX-LR: name must be an identifier" in message
