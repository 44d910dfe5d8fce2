"""Settings precedence (flags > QLANDER_* > TOML), validation, masking, and keys kept out of logs."""

import json
import logging

import pytest
from click.testing import CliRunner

from qdrant_lander.cli import main
from qdrant_lander.config import MASK, load_settings, redact_in_logs
from qdrant_lander.errors import InputError

KEY = "qk-7f3a9c1e5b"


@pytest.fixture
def toml(tmp_path):
    p = tmp_path / "lander.toml"
    p.write_text(f'url = "http://toml:6333"\napi_key = "{KEY}"\nbatch_size = 256\ninterval = 2.5\ndevice = "cpu"\n')
    return p


def test_flags_beat_environment_beat_toml(toml):
    env = {"QLANDER_URL": "http://env:6333", "QLANDER_BATCH_SIZE": "512"}
    s = load_settings({"url": "http://flag:6333", "threads": None}, toml, environ=env)
    assert s.url == "http://flag:6333"  # flag wins over env and file
    assert s.batch_size == 512  # env wins over file
    assert s.interval == 2.5 and s.device == "cpu"  # file wins over defaults
    assert s.threads is None  # a flag given as None is "not given", not "unset"
    assert s.api_key.get_secret_value() == KEY


def test_config_file_from_environment_and_empty_vars_are_unset(toml):
    s = load_settings(environ={"QLANDER_CONFIG": str(toml), "QLANDER_URL": ""})
    assert s.url == "http://toml:6333"


def test_defaults_without_any_source():
    s = load_settings(environ={})
    assert (s.url, s.device, str(s.path), s.metrics_port) == (None, "auto", "qdrant_data", None)


@pytest.mark.parametrize(
    "env, words",
    [
        ({"QLANDER_DEVICE": "gpu"}, ["device"]),
        ({"QLANDER_BATCH_SIZE": "0"}, ["batch_size"]),
        ({"QLANDER_METRICS_PORT": "http"}, ["metrics_port"]),
        ({"QLANDER_URLL": "http://x"}, ["QLANDER_URLL", "QLANDER_URL"]),  # typo: named, with the known names
    ],
)
def test_bad_values_are_clear_errors(env, words):
    with pytest.raises(InputError) as e:
        load_settings(environ=env)
    assert all(w in str(e.value) for w in words)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("url = \n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_settings(config_file=bad, environ={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('colection = "docs"\n')
    with pytest.raises(InputError, match="colection"):
        load_settings(config_file=unknown, environ={})


def test_config_show_masks_the_key(toml):
    runner = CliRunner()
    env = {"QLANDER_CONFIG": str(toml), "QLANDER_THREADS": "3"}
    r = runner.invoke(main, ["config", "show", "--json", "--batch-size", "64"], env=env)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["api_key"] == MASK and KEY not in r.output
    assert (data["url"], data["threads"], data["batch_size"]) == ("http://toml:6333", 3, 64)
    plain = runner.invoke(main, ["config", "show", "--api-key", KEY], env={})
    assert plain.exit_code == 0 and KEY not in plain.output and MASK in plain.output


def test_config_show_bad_setting_exits_2():
    r = CliRunner().invoke(main, ["config", "show"], env={"QLANDER_DEVICE": "tpu"})
    assert r.exit_code == 2 and "device" in r.output


def test_api_key_never_reaches_a_log_handler(toml, caplog):
    """Even a library that logs a request header verbatim (or our own repr of the settings) leaks nothing."""
    caplog.set_level(logging.DEBUG)
    s = load_settings(config_file=toml, environ={})  # loading installs the scrubber on the root handlers
    log = logging.getLogger("httpx.fake")
    log.debug("request headers: %s", {"api-key": KEY})
    log.info(f"settings: {s!r} {s}")
    logging.getLogger("qdrant_lander.x").warning("key=" + KEY)
    text = caplog.text
    assert KEY not in text
    assert text.count(MASK) >= 3


def test_redaction_applies_to_every_root_handler(tmp_path):
    path = tmp_path / "daemon.log"
    handler = logging.FileHandler(path)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        redact_in_logs("another-secret-value")
        root.warning("connecting with another-secret-value to the server")
        handler.flush()
    finally:
        root.removeHandler(handler)
        handler.close()
    assert "another-secret-value" not in path.read_text() and MASK in path.read_text()
