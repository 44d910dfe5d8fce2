"""The deployment files: they parse, their commands are real commands of our CLI, their settings are
real settings, and the images install the package the way the Makefile does (minus torch).

No Docker engine or Kubernetes cluster runs here, so this is what can be checked without one.
"""

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qdrant_lander.cli import main
from qdrant_lander.config import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
METRICS_PORT = "9633"


def check_cli(argv: list[str], where: str) -> None:
    """``qdrant-lander ARGV --help`` must succeed: the command and every option in ARGV exist."""
    cmd, names = main, list(argv)
    while names and hasattr(cmd, "commands"):
        if names[0] not in cmd.commands:
            if cmd is main:
                pytest.skip(f"{where}: command '{names[0]}' is not registered in the CLI yet")
            break
        cmd = cmd.commands[names.pop(0)]
    known = {o for p in cmd.params for o in p.opts}
    missing = [a for a in argv if a.startswith("--") and a not in known]
    assert not missing, f"{where}: `qdrant-lander {' '.join(argv)}` uses options the CLI lacks: {missing}"
    r = CliRunner().invoke(main, [*argv, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output, f"{where}: {r.output}"


def check_env(names, where: str) -> None:
    fields = {ENV_PREFIX + f.upper() for f in Settings.model_fields} | {ENV_PREFIX + "CONFIG"}
    bad = sorted(n for n in names if n.startswith(ENV_PREFIX) and n not in fields)
    assert not bad, f"{where} sets unknown settings {bad}"


# --- images ---------------------------------------------------------------------------------------


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(instruction, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / name).read_text())
    rows = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(r.split(None, 1)[0].upper(), r.split(None, 1)[1]) for r in rows]


def pip_installs(line: str) -> list[list[str]]:
    """Argument lists of every `pip install` in a shell line."""
    out = []
    for part in re.split(r"&&|;", line):
        words = shlex.split(part)
        if len(words) > 2 and words[0].endswith("pip") and words[1] == "install":
            out.append([w for w in words[2:] if not w.startswith("-")])
    return out


def extras_of(spec: str) -> set[str]:
    m = re.fullmatch(r"\.\[([\w,-]+)\]", spec)
    return set(m.group(1).split(",")) if m else set()


def makefile_project_extras() -> set[str]:
    installs = [a for ln in (ROOT / "Makefile").read_text().splitlines() if "pip install" in ln
                for a in pip_installs(ln.strip().replace("$(BIN)/", ""))]
    specs = [s for args in installs for s in args if s.startswith(".[")]
    assert len(specs) == 1, f"expected one project install line in the Makefile, got {specs}"
    return extras_of(specs[0])


@pytest.mark.parametrize("name, runtime_extra", [("Dockerfile", "cpu"), ("Dockerfile.cuda", "gpu")])
def test_image_installs_the_package_like_the_makefile_without_torch(name, runtime_extra):
    steps = dockerfile(name)
    installs = [a for op, arg in steps if op == "RUN" for a in pip_installs(arg)]
    specs = [s for args in installs for s in args if s.startswith(".[")]
    assert len(specs) == 1, f"{name}: expected one install of the project, got {specs}"
    extras = extras_of(specs[0])
    defined = set(PYPROJECT["project"]["optional-dependencies"])
    assert extras <= defined, f"{name} uses extras pyproject.toml lacks: {extras - defined}"
    # the Makefile installs cpu + train + dev; a serving image takes the runtime extra only
    make_extras = makefile_project_extras()
    assert {"train", "dev"} <= make_extras and "cpu" in make_extras
    assert extras - {"report"} == {runtime_extra} and not extras & {"train", "dev"}
    everything = " ".join(s for args in installs for s in args)
    assert "torch" not in everything, f"{name}: serving images need no torch"
    if runtime_extra == "gpu":  # never both onnxruntime builds: they overwrite one another
        assert "cpu" not in extras and re.search(r"onnxruntime-gpu==", everything)


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_image_copies_what_the_package_build_needs(name):
    steps = dockerfile(name)
    sources = [shlex.split(arg)[0] for op, arg in steps if op == "COPY" and not arg.startswith("--from")]
    sources += [w for op, arg in steps if op == "COPY" and not arg.startswith("--from") for w in shlex.split(arg)[1:-1]]
    for src in sources:
        assert (ROOT / src).exists(), f"{name} copies {src}, which is not in the repository"
    packages = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    for needed in ["pyproject.toml", PYPROJECT["project"]["readme"], *packages]:
        assert needed in sources, f"{name} does not copy {needed}, which the package build needs"
    entry = next(arg for op, arg in steps if op == "ENTRYPOINT")
    assert yaml.safe_load(entry) == list(PYPROJECT["project"]["scripts"])
    assert next(arg for op, arg in steps if op == "EXPOSE") == METRICS_PORT


def test_cpu_image_python_meets_requires_python():
    base = next(arg for op, arg in dockerfile("Dockerfile") if op == "FROM")
    version = tuple(int(v) for v in re.search(r"python:(\d+)\.(\d+)", base).groups())
    minimum = tuple(int(v) for v in re.search(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"]).groups())
    assert version >= minimum


# --- compose --------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_runs_qdrant_and_the_daemon_on_a_named_volume():
    c = compose()
    qdrant, lander = c["services"]["qdrant"], c["services"]["lander"]
    assert qdrant["image"].split(":")[0].endswith("qdrant/qdrant")
    volume = qdrant["volumes"][0].split(":")[0]
    assert volume in c["volumes"], "the Qdrant storage must be a named volume"
    assert (DEPLOY / lander["build"]["context"] / lander["build"]["dockerfile"]).resolve().is_file()
    assert lander["depends_on"] == ["qdrant"]
    check_env(lander["environment"], "docker-compose.yml")
    cmd = [re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", a) for a in lander["command"]]
    assert cmd[0] == "sync" and "--watch" in cmd
    assert cmd[cmd.index("--url") + 1] == "http://qdrant:6333"
    assert cmd[cmd.index("--metrics-port") + 1] == METRICS_PORT
    check_cli(cmd, "docker-compose.yml")


def test_gpu_override_runs_the_cuda_image_on_one_gpu():
    """The override changes only the lander: the CUDA image, `--device cuda` (no silent CPU), one NVIDIA GPU."""
    gpu = yaml.safe_load((DEPLOY / "docker-compose.gpu.yml").read_text())
    assert set(gpu["services"]) == {"lander"}
    lander = gpu["services"]["lander"]
    base = compose()["services"]["lander"]
    assert (DEPLOY / base["build"]["context"] / lander["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile.cuda"
    check_env(lander["environment"], "docker-compose.gpu.yml")
    assert Settings(device=lander["environment"]["QLANDER_DEVICE"]).device == "cuda"
    (device,) = lander["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed (the YAML is checked above instead)",
)
def test_docker_compose_config_validates():
    r = subprocess.run(["docker", "compose", "-f", str(DEPLOY / "docker-compose.yml"), "-f",
                        str(DEPLOY / "docker-compose.gpu.yml"), "config", "-q"],
                       capture_output=True, text=True, env={"QDRANT_API_KEY": "test", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr


# --- systemd --------------------------------------------------------------------------------------


def unit() -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in (DEPLOY / "systemd" / "qdrant-lander.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def test_systemd_unit_starts_a_real_command():
    service = dict(unit()["Service"])  # later keys win, as in systemd, except Environment (collected)
    env = dict(v.split("=", 1) for k, v in unit()["Service"] if k == "Environment")
    check_env(env, "qdrant-lander.service")
    argv = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], service["ExecStart"]))
    assert argv[0].startswith("/") and Path(argv[0]).name in PYPROJECT["project"]["scripts"]
    assert argv[1] == "sync" and "--watch" in argv
    check_cli(argv[1:], "qdrant-lander.service")
    assert "multi-user.target" in dict(unit()["Install"])["WantedBy"]
    assert service["Restart"] == "on-failure"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    """systemd's own checker; the install path of the executable is swapped for one that exists here."""
    text = (DEPLOY / "systemd" / "qdrant-lander.service").read_text()
    exe = dict(unit()["Service"])["ExecStart"].split()[0]
    (tmp_path / "qdrant-lander.service").write_text(text.replace(exe, shutil.which("true")))
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "qdrant-lander.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "qdrant-lander.service" not in r.stderr, r.stderr


def test_example_config_is_valid():
    s = load_settings(config_file=DEPLOY / "config.example.toml", environ={})
    assert s.metrics_port == int(METRICS_PORT) and s.api_key is None  # keys never in files


# --- kubernetes -----------------------------------------------------------------------------------


def manifests() -> dict[str, dict]:
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs = [d for f in kust["resources"] for d in yaml.safe_load_all((DEPLOY / "k8s" / f).read_text())]
    return {d["kind"]: d for d in docs}


def test_kubernetes_manifests_fit_together(tmp_path):
    m = manifests()
    assert set(m) == {"ConfigMap", "Secret", "Deployment"}
    cm, secret, dep = m["ConfigMap"], m["Secret"], m["Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # one writer per collection
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    check_env(env, "deployment.yaml")
    for e in env.values():
        ref = e.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            assert ref["configMapKeyRef"]["name"] == cm["metadata"]["name"]
            assert ref["configMapKeyRef"]["key"] in cm["data"]
        if "secretKeyRef" in ref:
            assert ref["secretKeyRef"]["name"] == secret["metadata"]["name"]
            assert ref["secretKeyRef"]["key"] in secret["stringData"]
    assert "secretKeyRef" in env["QLANDER_API_KEY"]["valueFrom"]  # the key comes from the Secret only
    # the config file the container reads is the ConfigMap's, and it is valid
    mounts = {v["name"]: v["mountPath"] for v in container["volumeMounts"]}
    (cfg_vol,) = [v for v in spec["template"]["spec"]["volumes"] if "configMap" in v]
    (item,) = cfg_vol["configMap"]["items"]
    assert env["QLANDER_CONFIG"]["value"] == f"{mounts[cfg_vol['name']]}/{item['path']}"
    toml_file = tmp_path / item["path"]
    toml_file.write_text(cm["data"][item["key"]])
    s = load_settings(config_file=toml_file, environ={"QLANDER_COLLECTION": cm["data"]["collection"]})
    assert s.url.startswith("http") and s.collection == cm["data"]["collection"]
    # the command, with Kubernetes' $(VAR) expansion, is a real one; probes and scrape hit its port
    args = [re.sub(r"\$\((\w+)\)", lambda x: cm["data"]["collection"], a) for a in container["args"]]
    assert args[0] == "sync" and "--watch" in args
    check_cli(args, "deployment.yaml")
    port = args[args.index("--metrics-port") + 1]
    assert {p["name"]: str(p["containerPort"]) for p in container["ports"]}["metrics"] == port
    assert spec["template"]["metadata"]["annotations"]["prometheus.io/port"] == port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}


# --- cluster guide --------------------------------------------------------------------------------


def test_cluster_guide_lists_every_qdrant_call_the_server_store_makes():
    """CLUSTER.md promises the daemon uses only the calls it lists; adding a call means listing it."""
    import ast

    tree = ast.parse((ROOT / "qdrant_lander" / "stores" / "client.py").read_text())
    used = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and (isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "client"  # self.client.X
             or isinstance(node.func.value, ast.Name) and node.func.value.id == "client")  # a helper's client.X
    }
    guide = (DEPLOY / "CLUSTER.md").read_text()
    table = guide.split("## 4.")[1]
    listed = set(re.findall(r"^\| ?(.+?) \|", table, re.M))
    listed = {name for cell in listed for name in re.findall(r"`(\w+)`", cell)}
    assert used, "found no qdrant-client calls: has the server store moved?"
    assert used <= listed, f"calls missing from deploy/CLUSTER.md: {sorted(used - listed)}"
    assert listed <= used, f"deploy/CLUSTER.md lists calls the store no longer makes: {sorted(listed - used)}"


def test_cluster_guide_collection_setup_runs(monkeypatch):
    """The guide's Python block is valid qdrant-client code (run against local mode, which ignores sharding)."""
    import qdrant_client

    real = qdrant_client.QdrantClient
    client = real(":memory:")
    monkeypatch.setattr(qdrant_client, "QdrantClient", lambda **kw: client)
    (code,) = re.findall(r"```python\n(.*?)```", (DEPLOY / "CLUSTER.md").read_text(), re.S)
    exec(code, {"API_KEY": "k"})
    info = client.get_collection("docs")
    assert info.config.params.vectors.distance == qdrant_client.models.Distance.COSINE
    assert client.collection_exists("_lander_meta")
    # the lease's records: majority writes (majority reads in the store), so one node down stops nothing
    meta = code[code.index('"_lander_meta"'):]
    replicas, acks = (int(re.search(rf"{k}=(\d+)", meta).group(1)) for k in ("replication_factor", "write_consistency_factor"))
    assert replicas >= 3 and replicas // 2 < acks < replicas
