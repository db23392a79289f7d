"""dvc.yaml's deps are the stages' real inputs: every project module a stage imports and every conf
file it reads is declared (so `dvc repro` reruns it when they change); code is declared as module
files or layer folders the stage imports from, so it never reruns for a layer it does not use, and
no conf file it never reads is declared. Params are keys: a conf file is declared by the keys
that can change a result (support.dvc_stages.param_keys), never whole when it holds others. The
rule and the analysis are in tests/support/dvc_stages.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.dvc_stages import (
    NOT_PARAMS,
    Stage,
    StageCheck,
    affected_stages,
    check_stages,
    disallowed_module_deps,
    expand_stages,
    module_deps,
    param_keys,
    wrong_param_keys,
)
from support.repo_copy import REPO_ROOT, copy_repo, run_cmd

TOUCHED_MODULE = "pipeline/core/objectives.py"
TOUCHED_CONF = "conf/model/softmax.yaml"  # its l2 value is changed


def test_every_stage_declares_the_modules_and_conf_files_it_uses() -> None:
    problems = []
    for name, check in check_stages(REPO_ROOT).items():
        todo = [f"    {what}: {', '.join(paths)}" for what, paths in (
            ("add to deps (the module, or its layer folder)", check.missing_modules),
            ("add to params", check.missing_conf),
            ("remove from deps (a module never imported, a folder nothing is imported from, "
             "or a package root)", check.spurious_modules),
            ("remove from params (never read)", check.spurious_conf),
            ("declare as params these keys (NOT_PARAMS left out)", check.wrong_keys),
        ) if paths]
        if todo:
            problems.append(f"  {name}:\n" + "\n".join(todo))
    if problems:
        pytest.fail("dvc.yaml deps do not match what the stages import and read "
                    "(tests/support/dvc_stages.py):\n" + "\n".join(problems), pytrace=False)


def test_module_deps_are_imported_modules_or_layer_folders_imported_from() -> None:
    """The rule of dvc_stages, on made-up deps: a folder is allowed only below a package root and
    only when the stage imports from it; a module file only when the stage imports it."""
    imported = {"pipeline/__init__.py", "pipeline/train.py", "pipeline/core/__init__.py",
                "pipeline/core/errors.py", "pipeline/core/solvers/__init__.py"}
    assert disallowed_module_deps(("pipeline/train.py", "pipeline/core"), imported) == []
    assert disallowed_module_deps(("pipeline/core/solvers",), imported) == []  # a sub-package
    assert disallowed_module_deps(("pipeline",), imported) == ["pipeline"]  # every stage's module
    assert disallowed_module_deps(("pipeline/reporting",), imported) == ["pipeline/reporting"]
    assert disallowed_module_deps(("pipeline/report.py", "pipeline/core/theory.py"), imported) \
        == ["pipeline/core/theory.py", "pipeline/report.py"]
    assert module_deps(("pipeline/core/", "data/prepared/x.npz", "hydra_plugins/a/__init__.py")) \
        == ("pipeline/core", "hydra_plugins/a/__init__.py")
    check = StageCheck(required_conf={"conf/a.yaml"},
                       declared_modules=("pipeline/core", "pipeline/t.py"))
    checks = {"s": check, "other": StageCheck(declared_modules=("pipeline/store",))}
    assert affected_stages(checks, {"pipeline/core/solvers/gd.py"}) == {"s"}
    assert affected_stages(checks, {"conf/a.yaml"}) == {"s"}
    assert affected_stages(checks, {"pipeline/tx.py", "conf/b.yaml"}) == set()


def test_params_are_keys_that_can_change_a_result_and_few() -> None:
    """Params are keys of their conf file, never whole files and never a key that changes no result
    (NOT_PARAMS: paths, tracking, mirrors, Hydra's folders); every conf file a stage reads whole is
    a dep, so a key that is not a param still reruns it; a few dozen params in all."""
    data = REPO_ROOT / "conf" / "data" / "mnist.yaml"
    keys = param_keys(data)
    assert keys is not None and "files" in keys and "n_train" in keys
    assert not {"mirrors", "title", "root", "folder"} & set(keys)
    assert param_keys(REPO_ROOT / "conf" / "optimizer" / "gd.yaml") is None  # every key counts
    train = param_keys(REPO_ROOT / "conf" / "train.yaml")
    assert train is not None and "seed" in train and not {"mlflow", "paths", "defaults"} & set(
        train)
    hw3 = param_keys(REPO_ROOT / "conf" / "experiment" / "hw3_sgd.yaml")
    assert hw3 is not None and "hydra.sweeper" in hw3 and "hydra.sweep" not in hw3

    def stage(*keyed: tuple[str, tuple[str, ...] | None]) -> Stage:
        return Stage("s", "cmd", (), tuple(f for f, _ in keyed), (), param_keys=keyed)

    assert wrong_param_keys(stage(("conf/data/mnist.yaml", ("files", "scale")))) == []
    assert wrong_param_keys(stage(("conf/experiment/hw3_sgd.yaml",
                                   ("hydra.sweeper.n_trials", "model.l2")))) == []
    assert wrong_param_keys(stage(("conf/optimizer/gd.yaml", None))) != []  # whole
    assert wrong_param_keys(stage(("conf/train.yaml", ("seed", "mlflow.enabled")))) == [
        f"conf/train.yaml: mlflow.enabled changes no result ({NOT_PARAMS['mlflow']})"]
    assert wrong_param_keys(stage(("conf/optimizer/gd.yaml", ("no_such_key",)))) == [
        "conf/optimizer/gd.yaml: no_such_key is not a key of the file"]
    columns = set()
    for st in expand_stages(REPO_ROOT):
        assert all(ks is not None for f, ks in st.param_keys if f.startswith("conf/")), st.name
        columns |= {(f, k) for f, ks in st.param_keys for k in ks or ()}
    assert 10 <= len(columns) <= 48, sorted(columns)


@pytest.mark.slow
def test_the_fast_composition_finds_what_hydra_compose_finds() -> None:
    """dvc_stages.Composer's shared-cache composition against hydra.compose, on the stages with
    sweeps,
    Hydra callbacks, a custom sweeper, nested data defaults and the report's catalog reads."""
    names = [s.name for s in expand_stages(REPO_ROOT) if s.multirun or s.app == "report"]
    names += ["prepare@mnist-val-none", "train-softmax-sgd"]  # single runs
    fast, public = (
        check_stages(REPO_ROOT, only=names),
        check_stages(REPO_ROOT, public=True, only=names),
    )
    assert set(fast) == set(public) == set(names) and len(fast) >= 4
    for name in fast:
        assert fast[name].required_modules == public[name].required_modules, name
        assert fast[name].required_conf == public[name].required_conf, name


def _placeholder(path: Path) -> None:
    """A small stand-in: a file when the name has a suffix, else a folder holding one file."""
    if path.exists():
        return
    if path.suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"placeholder {path.name}\n")
    else:
        path.mkdir(parents=True)
        (path / "placeholder").write_text("placeholder\n")


def _status(root: Path) -> dict[str, object]:
    res = run_cmd(["dvc", "status", "--json"], cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout or "{}")


@pytest.mark.slow
def test_touching_a_core_module_and_a_conf_value_marks_every_downstream_stage(
    tmp_path: Path,
) -> None:
    root = copy_repo(tmp_path)
    stages: list[Stage] = expand_stages(root)
    listed = run_cmd(["dvc", "stage", "list", "--name-only"], cwd=root)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout.split() == [s.name for s in stages]  # the helper names stages as DVC does

    # Every output (then every dep still absent) as a placeholder; `dvc commit` records them all in
    # dvc.lock without running a command, so the pipeline is up to date.
    for stage in stages:
        for rel in (*stage.outs, *stage.deps):
            _placeholder(root / rel)
    commit = run_cmd(["dvc", "commit", "--force", "--quiet"], cwd=root)
    assert commit.returncode == 0, commit.stdout[-2000:] + commit.stderr[-2000:]
    cache = root / "pipeline" / "core" / "__pycache__"  # what running a stage writes: .dvcignore'd
    cache.mkdir(exist_ok=True)
    (cache / "objectives.cpython-312.pyc").write_bytes(b"bytecode")
    assert _status(root) == {}

    checks = check_stages(root)
    expected = affected_stages(checks, {TOUCHED_MODULE, TOUCHED_CONF})
    # "exactly the stages that import it", at the grain of a layer folder: every stage importing
    # the module reruns, and any other stage that reruns for it imports from its layer
    for_module = affected_stages(checks, {TOUCHED_MODULE})
    layer = TOUCHED_MODULE.rsplit("/", 1)[0]
    assert {n for n, c in checks.items() if TOUCHED_MODULE in c.required_modules} <= for_module
    assert all(any(m.startswith(layer + "/") for m in checks[n].required_modules)
               for n in for_module)
    module = root / TOUCHED_MODULE
    module.write_text(module.read_text() + "# touched by test_dvc_deps\n")  # DVC hashes the content
    conf = root / TOUCHED_CONF
    text, n = re.subn(r"(?m)^l2: .*$", "l2: 2.5e-4", conf.read_text())
    assert n == 1, f"{TOUCHED_CONF} has no top-level l2"
    conf.write_text(text)

    changed = set(_status(root))
    assert {"train-softmax", "evaluate-softmax",
            "reference-mnist"} <= expected
    assert changed == expected, (f"stages that use {TOUCHED_MODULE} or {TOUCHED_CONF} but DVC does "
                                 "not rerun: "
                                 f"{sorted(expected - changed)}; DVC reruns, needlessly: "
                                 f"{sorted(changed - expected)}")
