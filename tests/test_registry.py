"""Registries and extensions: a package outside stabletrain plugs in a model and a distortion through an entry point,
checkpoints find their extension in a fresh process, and the core neither imports nor needs the jets package."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import stabletrain
from stabletrain import registry
from stabletrain.checks import StableTrainError
from stabletrain.registry import Registry

SRC = Path(stabletrain.__file__).resolve().parent
DATA = Path(__file__).parent / "data"


def _env(*paths: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC.parent), *map(str, paths), env.get("PYTHONPATH", "")])
    return env


def test_options_are_checked_against_the_factory_signature():
    reg = Registry("widget")
    reg.register("box", lambda side=1.0, depth=2.0: side * depth)
    assert reg.build("box", side=3.0) == 6.0
    with pytest.raises(StableTrainError, match="unknown option 'sied' for widget 'box'; its options: side, depth"):
        reg.build("box", sied=3.0)
    with pytest.raises(StableTrainError, match="unknown widget 'cube'.*known: box"):
        reg.get("cube")
    with pytest.raises(StableTrainError, match="already registered"):
        reg.register("box", lambda: 0)


def test_lazy_entries_import_on_first_use():
    reg = Registry("thing")
    reg.register("join", "os.path:join")
    assert reg.get("join") is os.path.join
    reg.register("missing", "no_such_module_xyz:thing")
    with pytest.raises(StableTrainError, match="no_such_module_xyz"):
        reg.get("missing")


def _write_plugin_package(root: Path) -> None:
    """A package ``toyplugin`` with a dist-info that declares a stabletrain.plugins entry point."""
    pkg = root / "toyplugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        from stabletrain.distortions import Distortion


        class ToyNet(nn.Module):
            def __init__(self, in_channels=1, num_classes=10, mean=None, std=None, hidden=4):
                super().__init__()
                self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

            def forward(self, x):
                return self.net(x)


        class Darken(Distortion):
            family = "darken"

            def apply(self, x, generator):
                return x * (1 - self.param / 100)


        def register():
            from stabletrain.registry import DISTORTIONS, MODELS

            MODELS.register("toy_net", ToyNet)
            DISTORTIONS.register("darken", Darken)
        '''))
    info = root / "toyplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[stabletrain.plugins]\ntoy = toyplugin:register\n")


def test_a_third_party_package_registers_a_model_and_a_distortion(tmp_path):
    _write_plugin_package(tmp_path)
    script = textwrap.dedent('''
        import torch
        from stabletrain.distortions import parse_distortion
        from stabletrain.models import build_model
        from stabletrain.registry import MODELS

        model = build_model("toy_net", num_classes=3, hidden=5)
        assert model(torch.rand(2, 1, 4, 4)).shape == (2, 3)
        assert MODELS.provider("toy_net") == "toyplugin"
        x = torch.full((1, 1, 2, 2), 0.5)
        assert torch.allclose(parse_distortion("darken-50")(x), x * 0.5)
        print("ok")
        ''')
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_a_checkpoint_of_a_plugin_model_loads_in_a_fresh_process(tmp_path):
    """Train a plugin model through the common loop, then rebuild it where nothing imported the plugin."""
    _write_plugin_package(tmp_path)
    train_script = textwrap.dedent(f'''
        from stabletrain.training import TrainConfig, train
        train(TrainConfig(data="digits", image_size=8, model="toy_net", hidden=6, method="plain", epochs=1,
                          batch_size=256), r"{tmp_path / 'run'}", progress=False)
        ''')
    run = subprocess.run([sys.executable, "-c", train_script], capture_output=True, text=True, env=_env(tmp_path))
    assert run.returncode == 0, run.stderr
    load_script = textwrap.dedent(f'''
        import sys
        from stabletrain.training import load_model
        assert "toyplugin" not in sys.modules
        model, checkpoint = load_model(r"{tmp_path / 'run'}")
        print(checkpoint["model"]["provider"], type(model).__name__)
        ''')
    run = subprocess.run([sys.executable, "-c", load_script], capture_output=True, text=True, env=_env(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["toyplugin", "ToyNet"]
    # without the plugin installed, the error names the package that provided the model
    run = subprocess.run([sys.executable, "-m", "stabletrain", "evaluate", str(tmp_path / "run"), "--quiet"],
                         capture_output=True, text=True, env=_env())
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "toy_net" in run.stderr and "toyplugin" in run.stderr


def test_jets_checkpoints_load_without_importing_the_tagger_first():
    """Issue 11, item 5: load_model failed with "unknown model 'jet_cnn'" unless jets.tagging was imported."""
    script = textwrap.dedent(f'''
        import sys
        from stabletrain.training import load_model
        model, checkpoint = load_model(r"{DATA / 'legacy-0.1-jet_cnn.pt'}")
        print(type(model).__name__)
        ''')
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env())
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "JetTagger"


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module a source file imports (absolute names; relative ones resolved), with the nesting depth."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + "." + "__init__"
    base_parts = package.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base_parts[: len(base_parts) - node.level + 1]
                module = ".".join(parent + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, 0))
            found += [(f"{module}.{alias.name}", 0) for alias in node.names]
    return found


def test_nothing_outside_jets_imports_jets():
    offenders = []
    for path in SRC.rglob("*.py"):
        if "jets" in path.relative_to(SRC).parts:
            continue
        for module, _ in _imports(path):
            if module == "stabletrain.jets" or module.startswith("stabletrain.jets."):
                offenders.append(f"{path.relative_to(SRC)} imports {module}")
    assert not offenders, offenders


def test_top_level_imports_of_the_core_have_no_cycles():
    """Module-level imports between core modules form no cycle (imports inside functions are not counted)."""
    graph: dict[str, set[str]] = {}
    modules = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        name = name[: -len(".__init__")] if name.endswith(".__init__") else name
        modules[name] = path
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                target = ".".join(parent + ([node.module] if node.module else []))
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stabletrain"):
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names if a.name.startswith("stabletrain")]
            else:
                continue
            deps |= {c for c in candidates if c in modules and c != name}
        graph[name] = deps

    def package_of(child: str, parent: str) -> bool:
        return child.startswith(parent + ".")

    # a package's __init__ importing its own submodules is not a cycle of concepts; drop those edges back
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if package_of(node, dep):  # a submodule importing its package's other submodules via the package
                continue
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif not state.get(dep):
                visit(dep, stack + [dep])
        state[node] = 2

    for node in graph:
        if not state.get(node):
            visit(node, [node])
    assert not cycles, cycles


def test_the_core_works_with_the_jets_package_unimportable(tmp_path):
    """train, evaluate, demo and compare on images with ``stabletrain.jets`` made unimportable."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent('''
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "stabletrain.jets" or name.startswith("stabletrain.jets."):
                    raise ImportError(f"{name} is blocked for this test")
                return None

        sys.meta_path.insert(0, Block())
        '''))
    env = _env(blocker)
    out = tmp_path / "runs"
    tiny = ["--data", "digits", "--image-size", "16", "--width", "4", "--epochs", "1", "--batch-size", "256"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "stabletrain", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path)

    run = cli("train", *tiny, "--method", "plain", "--out", str(out / "plain"), "--quiet")
    assert run.returncode == 0, run.stderr
    run = cli("evaluate", str(out / "plain"), "--distortions", "jpeg-50,crop-10", "--quiet")
    assert run.returncode == 0, run.stderr
    assert (out / "plain" / "evaluation" / "results.json").exists()
    config = tmp_path / "compare.yaml"
    config.write_text("data: digits\nmethods: [plain]\nseeds: [0]\n"
                      "train: {epochs: 1, width: 4, image_size: 16, batch_size: 256}\n"
                      "evaluation: {distortions: [jpeg-50], epsilons: [0.0, 0.02], attack_steps: 1,\n"
                      "  attack_examples: 16, smoothing: false}\n")
    run = cli("compare", "--config", str(config), "--out", str(out / "compare"), "--quiet")
    assert run.returncode == 0, run.stderr
    run = cli("demo", "--quick", "--methods", "plain", "--epochs", "1", "--distortions", "jpeg-50",
              "--out", str(out / "demo"), "--quiet")
    assert run.returncode == 0, run.stderr
    # the jets entries are reported as unavailable, with the reason, instead of a traceback
    run = cli("train", "--task", "jets", "--data", "x.h5", "--out", str(out / "jets"))
    assert run.returncode == 2 and "Traceback" not in run.stderr and "jets" in run.stderr


def test_plugin_status_is_reported_in_the_error():
    assert registry.load_plugins().get("jets") == "loaded"
    with pytest.raises(StableTrainError, match="unknown model 'nope'"):
        registry.MODELS.get("nope")


def test_registered_models_are_built_with_checked_options():
    from stabletrain.models import build_model

    model = build_model("small_cnn", in_channels=1, num_classes=3, width=4)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(StableTrainError, match="unknown option 'widht' for model 'small_cnn'"):
        build_model("small_cnn", widht=4)


def test_evaluate_names_the_extension_for_a_checkpoint_of_its_task(tmp_path, capsys):
    import shutil

    from stabletrain.cli import main

    run = tmp_path / "jets-run"
    run.mkdir()
    shutil.copy(DATA / "legacy-0.1-jet_cnn.pt", run / "checkpoint.pt")
    assert main(["evaluate", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "trained for task 'jets'" in err and "stabletrain jets evaluate" in err and "Traceback" not in err
