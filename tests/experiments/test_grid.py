import pytest
from flwr.common.config import parse_config_args

from experiments.grid import (
    check_combinations,
    check_federation_config,
    check_overlap,
    declared_keys,
    expand,
    folder_name,
    parse_grid,
    parse_run_config,
    run_config_arg,
    typed_grid,
)
from experiments.runs import ExperimentError


def test_grid_values_are_typed_like_toml_and_quoted_values_kept_whole() -> None:
    grid = parse_grid(
        "strategy=fedavg,fedprox  proximal-mu=0.01,1e-3 central-eval=true,false "
        "dataset='/data/my set,v2.npz',\"digits\" local-epochs=1,5"
    )

    assert grid == {
        "strategy": ["fedavg", "fedprox"],
        "proximal-mu": [0.01, 0.001],
        "central-eval": [True, False],
        "dataset": ["/data/my set,v2.npz", "digits"],
        "local-epochs": [1, 5],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--grid is empty"),
        ("strategy", "'strategy' is not key=value"),
        ("=fedavg", "no key before '='"),
        ("strategy=", "strategy: empty value"),
        ("strategy=fedavg,,fedprox", "strategy: empty value"),
        ("strategy=fedavg, fedprox", "strategy: empty value"),
        ("dataset='a.npz", "never closed"),
        ("dataset='a.npz'x", "unexpected 'x' after a quoted value"),
        ("dataset=a'b'", "a quote may only start a value"),
        ("seed=1 seed=2", "seed is given twice"),
        ("strategy=fedavg,fedavg", "'fedavg' is listed twice"),
    ],
)
def test_bad_grid_syntax_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ExperimentError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_grid(text)


def test_combinations_are_the_product_with_the_first_key_slowest() -> None:
    combos = expand({"strategy": ["fedavg", "fedprox"], "proximal-mu": [0.01, 0.1], "local-epochs": [1]})

    assert combos == [
        {"strategy": "fedavg", "proximal-mu": 0.01, "local-epochs": 1},
        {"strategy": "fedavg", "proximal-mu": 0.1, "local-epochs": 1},
        {"strategy": "fedprox", "proximal-mu": 0.01, "local-epochs": 1},
        {"strategy": "fedprox", "proximal-mu": 0.1, "local-epochs": 1},
    ]


def test_unknown_key_is_refused_before_anything_runs_with_close_matches() -> None:
    declared = declared_keys()

    with pytest.raises(
        ExperimentError, match=r"'proximal-muu' is not a run-config key.*did you mean proximal-mu"
    ):
        typed_grid(parse_grid("strategy=fedavg proximal-muu=0.1"), declared)
    with pytest.raises(ExperimentError, match=r"--run-config: 'num-rounds' .*num-server-rounds"):
        parse_run_config("num-rounds=3", declared)


def test_keys_come_from_the_apps_declarations_including_owners_sections() -> None:
    declared = declared_keys()

    # run level (AppConfig), a strategy's section, a wrapper's, the simulation harness's
    assert {"num-server-rounds", "proximal-mu", "dp-clip-norm", "compression", "attack"} <= set(declared)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("seed=1,2", "seed cannot be set here: the sweep sets seed from --seeds"),
        ("output-dir='x'", "output-dir cannot be set here"),
        ("proximal-mu=-1", "proximal-mu=-1.0 is invalid: must be >= 0"),
        ("local-epochs=1.5", "local-epochs=1.5 is invalid: must be of type int"),
    ],
)
def test_reserved_keys_and_bad_values_are_refused(grid: str, message: str) -> None:
    with pytest.raises(ExperimentError, match=message.replace("(", r"\(")):
        typed_grid(parse_grid(grid), declared_keys())


def test_values_take_the_declared_type() -> None:
    grid = typed_grid(parse_grid("proximal-mu=0,1 strategy=1"), declared_keys())

    assert grid == {"proximal-mu": [0.0, 1.0], "strategy": ["1"]}
    assert all(isinstance(v, float) for v in grid["proximal-mu"])


def test_combination_checks_run_as_the_server_app_would() -> None:
    with pytest.raises(ExperimentError, match="strategy='nope' is unknown; known strategies: .*fedavg"):
        check_combinations(expand({"strategy": ["fedavg", "nope"]}), {})
    with pytest.raises(ExperimentError, match="straggler-fraction=0.5 needs local-epochs >= 2"):
        check_combinations(expand({"straggler-fraction": [0.0, 0.5]}), {"local-epochs": 1})
    check_combinations(expand({"strategy": ["fedavg", "median"]}), {"robust-num-byzantine": 5})


def test_a_combination_a_wrapper_refuses_fails_before_anything_runs() -> None:
    with pytest.raises(ExperimentError, match=r"strategy=median: .*secure-aggregation='secagg\+'"):
        check_combinations(expand({"strategy": ["fedavg", "median"]}), {"secure-aggregation": "secagg+"})


def test_a_missing_tracking_library_fails_the_sweep_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the [tracking] extra were not installed
    with pytest.raises(ExperimentError, match=r'pip install -e "\.\[tracking\]"'):
        check_combinations(expand({"strategy": ["fedavg"]}), {"tracking": "mlflow"})


def test_a_key_both_swept_and_fixed_is_refused() -> None:
    with pytest.raises(ExperimentError, match="local-epochs given in both --grid and --run-config"):
        check_overlap({"local-epochs": [1, 2]}, {"local-epochs": 1})


def test_the_run_config_argument_parses_back_to_the_same_values_with_flowers_parser() -> None:
    values = {
        "strategy": "fedprox",
        "proximal-mu": 0.1,
        "server-tau": 1e-9,
        "learning-rate": 1.0,
        "local-epochs": 2,
        "central-eval": False,
        "output-dir": "/tmp/a sweep/it's here",
        "dataset": "/data/x,y.npz",
    }

    assert parse_config_args([run_config_arg(values)]) == values


def test_run_config_is_parsed_as_flwr_run_parses_it() -> None:
    assert parse_run_config("num-server-rounds=2 dataset='digits' learning-rate=1", declared_keys()) == {
        "num-server-rounds": 2,
        "dataset": "digits",
        "learning-rate": 1.0,
    }
    with pytest.raises(ExperimentError, match="--run-config"):
        parse_run_config("num-server-rounds=[", declared_keys())


def test_folder_names_are_readable_and_distinct() -> None:
    a = folder_name({"strategy": "fedprox", "proximal-mu": 0.1})
    b = folder_name({"dataset": "/data/a b.npz"})
    c = folder_name({"dataset": "/data/a-b.npz"})

    assert a == "strategy-fedprox_proximal-mu-0.1"
    assert b != c and "/" not in b and " " not in b


def test_federation_config_is_checked_against_flowers_simulation_config() -> None:
    check_federation_config("num-supernodes=4 client-resources-num-cpus=1")
    check_federation_config(None)
    with pytest.raises(ExperimentError, match="Unknown simulation config field.*num_nodes"):
        check_federation_config("num-nodes=4")
