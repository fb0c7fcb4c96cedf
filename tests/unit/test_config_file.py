"""The config file: every flag has a key, sources are validated, errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from livedata.cli import build_parser, config_from_args
from livedata.config import FILE_KEYS, Config, ConfigError, load_file
from livedata.core.sourcespec import MqttSpec, SpecError, StreamSpec, parse_mqtt, parse_sources, parse_stream


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "livedata.toml"
    p.write_text(text)
    return str(p)


def test_every_serve_flag_has_a_file_key() -> None:
    parser = build_parser()
    serve = next(a for a in parser._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
                 if a.prog.endswith("serve"))
    flags = {o[2:].replace("-", "_") for a in serve._actions for o in a.option_strings if o.startswith("--")}
    flags -= {"help", "config"}
    assert flags == set(FILE_KEYS)


def test_file_values_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9001\nmax-channels = 7\nretention = 60\ncors_origin = ["http://a", "http://b"]\n'
                           'write_tokens = "t1, t2"\n')
    c = Config.load({}, env={}, file=path)
    assert (c.port, c.max_channels, c.retention_s) == (9001, 7, 60.0)
    assert c.cors_origin == ("http://a", "http://b") and c.write_tokens == ("t1", "t2")
    c = Config.load({}, env={"LIVEDATA_PORT": "9002"}, file=path)
    assert c.port == 9002 and c.max_channels == 7
    c = Config.load({"port": 9003}, env={"LIVEDATA_PORT": "9002"}, file=path)
    assert c.port == 9003


def test_cli_reads_config_from_flag_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "port = 9004\n")
    ns = build_parser().parse_args(["serve", "--config", path])
    assert config_from_args(ns).port == 9004
    monkeypatch.setenv("LIVEDATA_CONFIG", path)
    ns = build_parser().parse_args(["serve", "--port", "9005"])
    assert config_from_args(ns).port == 9005
    assert config_from_args(build_parser().parse_args(["serve"])).config_file == path


@pytest.mark.parametrize(("text", "key", "what"), [
    ("port = 70000\n", "port", "must be 1..65535"),
    ('port = "80"\n', "port", "must be an integer"),
    ("retention = -1\n", "retention", "must be positive"),
    ("max_chanels = 3\n", "max_chanels", "did you mean 'max_channels'"),
    ('broker = "mysql://x"\n', "broker", "redis:// URL"),
    ('log_level = "loud"\n', "log_level", "debug, info"),
    ("cors_origin = [1]\n", "cors_origin", "list of strings"),
    ('certfile = "a.pem"\n', "keyfile", "go together"),
    ("[[sources.mqtt]]\ntopics = ['a/#']\n", "sources.mqtt[0].url", "is required"),
    ("[[sources.mqtt]]\nurl = 'http://x'\ntopics = ['a/#']\n", "sources.mqtt[0].url", "mqtt://"),
    ("[[sources.mqtt]]\nurl = 'mqtt://x'\n", "sources.mqtt[0].topics", "is required"),
    ("[[sources.mqtt]]\nurl = 'mqtt://x'\ntopics = ['a/#/b']\n", "sources.mqtt[0].topics[0]", "'#'"),
    ("[[sources.mqtt]]\nurl = 'mqtt://x'\ntopics = ['a']\nqos = 3\n", "sources.mqtt[0].qos", "0 to 2"),
    ("[[sources.mqtt]]\nurl = 'mqtt://x'\ntopics = ['a']\nchannel = '{topik}'\n", "sources.mqtt[0].channel",
     "unknown {topik}"),
    ("[[sources.mqtt]]\nurl = 'mqtt://x'\ntopics = ['a']\nformat = 'xml'\n", "sources.mqtt[0].format", "one of"),
    ("[[sources.mqtt]]\nurl = 'mqtt://x'\ntopics = ['a']\ntopic = 'b'\n", "sources.mqtt[0].topic",
     "did you mean 'topics'"),
    ("[[sources.mqtt]]\nurl = 'mqtt://x'\ntopics = ['a']\ntimezone = 'Mars/Base'\n", "sources.mqtt[0].timezone",
     "unknown time zone"),
    ("[[sources.mqtt]]\nurl = 'mqtt://x'\ntopics = ['a']\njson_path = '$.a['\n", "sources.mqtt[0].json_path",
     "JSON path"),
    ("[[sources.mqtt]]\nurl = 'mqtt://x'\ntopics = ['a']\nca_file = 'ca.pem'\n", "sources.mqtt[0].ca_file",
     "mqtts://"),
    ("[[sources.stream]]\nurl = 'ftp://x'\nchannel = 'c'\n", "sources.stream[0].url", "http://"),
    ("[[sources.stream]]\nurl = 'http://x'\n", "sources.stream[0].channel", "is required"),
    ("[[sources.stream]]\nurl = 'http://x'\nchannel = 'bad//name'\n", "sources.stream[0].channel",
     "invalid channel name"),
    ("[[sources.stream]]\nurl = 'http://x'\nchannel = 'c'\nsubscribe = '{}'\n", "sources.stream[0].subscribe",
     "ws://"),
    ("[[sources.stream]]\nurl = 'http://x'\nchannel = 'c'\nname = 'a'\n[[sources.stream]]\nurl = 'http://y'\n"
     "channel = 'd'\nname = 'a'\n", "sources.stream[1].name", "also the name"),
    ("[sources]\nkafka = 1\n", "sources.kafka", "unknown key"),
    ("sources = 3\n", "sources", "must be a table"),
])
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, key: str, what: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_file(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}: "), msg
    assert what in msg
    assert "\n" not in msg


def test_syntax_errors_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1"):
        load_file(write(tmp_path, "port = \n"))
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_file(str(tmp_path / "nope.toml"))
    (tmp_path / "bin.toml").write_bytes(b"port = 1\n\xff\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_file(str(tmp_path / "bin.toml"))


def test_mqtt_source_defaults_and_url_credentials() -> None:
    s = parse_mqtt({"url": "mqtts://u%40x:p%3Aw@broker.example", "topics": "sensors/#"})
    assert isinstance(s, MqttSpec)
    assert (s.host, s.port, s.tls is not None) == ("broker.example", 8883, True)
    assert (s.username, s.password) == ("u@x", "p:w")
    assert s.topics == ("sensors/#",) and s.channel.text == "{topic}" and s.qos == 1
    assert s.client_id.startswith("livedata-") and s.name == "mqtt-broker.example-8883"
    assert "p:w" not in repr(s)
    again = parse_mqtt({"url": "mqtts://u%40x:p%3Aw@broker.example", "topics": "sensors/#"})
    assert again.client_id == s.client_id  # stable across restarts: the broker keeps the session


def test_stream_source_subscribe_table_and_headers() -> None:
    s = parse_stream({"url": "ws://h:1/api/ws", "channel": "c",
                      "subscribe": {"type": "subscribe", "id": "A", "channel": "x"},
                      "headers": {"Authorization": "Bearer t"}})
    assert isinstance(s, StreamSpec)
    assert s.subscribe == '{"type":"subscribe","id":"A","channel":"x"}'
    assert s.headers == (("Authorization", "Bearer t"),)
    assert "Bearer" not in repr(s)
    with pytest.raises(SpecError, match="line breaks"):
        parse_stream({"url": "http://h", "channel": "c", "headers": {"X": "a\r\nb"}})


def test_sources_get_unique_default_names() -> None:
    specs = parse_sources({"mqtt": [{"url": "mqtt://h", "topics": ["a"]}, {"url": "mqtt://h", "topics": ["b"]}],
                           "stream": [{"url": "http://h", "channel": "c"}]})
    assert [s.name for s in specs] == ["mqtt-h-1883", "mqtt-h-1883-1", "stream-c"]


def test_every_toml_example_in_the_docs_loads(tmp_path: Path) -> None:
    import re

    from tests.conftest import ROOT

    text = (ROOT / "docs" / "sources.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) >= 7
    for i, block in enumerate(blocks):
        values = load_file(write(tmp_path, block))
        assert values.get("sources") or values.get("port"), f"block {i} defines nothing"
