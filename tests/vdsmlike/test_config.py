"""Agent configuration: INI file, flags over the file, defaults, and refusals."""

import re

import pytest

from vdsmlike.config import ConfigError, load_config, parse_listen, read_ini


def test_defaults_match_the_documented_ones():
    """With no flags the agent listens on 127.0.0.1:54321 with embedded QEMU in its state dir."""
    config = load_config([], environ={})
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 54321)
    assert config.state_dir == "/var/lib/vdsmlike"
    assert config.libvirt_uri == "qemu:///embed?root=/var/lib/vdsmlike/libvirt"
    assert config.url_file == "/var/lib/vdsmlike/agent.url"


def test_flags_override_the_file(tmp_path):
    """A flag wins over the same setting in the INI file."""
    ini = tmp_path / "agent.conf"
    ini.write_text("[agent]\nlisten = 127.0.0.1:1234\nlibvirt_uri = test:///default\n")
    config = load_config(["--config", str(ini), "--listen", "127.0.0.1:0"], environ={})
    assert config.listen_port == 0
    assert config.libvirt_uri == "test:///default"


def test_ini_values_are_typed():
    """Numbers and booleans in the INI file become numbers and booleans."""
    config = read_ini(
        "[rpc]\nstrict = false\nmax_message_size = 2048\n[vars]\nguest_wait_timeout = 2.5\n"
    )
    assert config.strict is False
    assert config.max_message_size == 2048
    assert config.guest_wait_timeout == 2.5


def test_ksm_dir_defaults_to_sysfs_and_can_be_moved():
    """KSM's knobs are under /sys/kernel/mm/ksm unless [vars] ksm_dir says otherwise."""
    assert load_config([], environ={}).ksm_dir == "/sys/kernel/mm/ksm"
    assert read_ini("[vars]\nksm_dir = /tmp/fake-ksm\n").ksm_dir == "/tmp/fake-ksm"


@pytest.mark.parametrize(
    "text,message",
    [
        ("[agent]\nbogus = 1\n", "unknown setting [agent] bogus"),
        ("[rpc]\nstrict = maybe\n", "strict must be a bool"),
        ("[vars]\nvm_sample_interval = soon\n", "vm_sample_interval must be a float"),
        ("not an ini", "cannot parse"),
    ],
)
def test_bad_ini_is_refused_with_the_setting_named(text, message):
    """A bad INI setting is refused with a message naming it."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_ini(text)


def test_refuses_non_loopback_without_token():
    """Listening beyond loopback without a token is refused."""
    with pytest.raises(ConfigError, match="without authentication"):
        load_config(["--listen", "0.0.0.0:54321"], environ={})


def test_non_loopback_with_token_is_accepted(tmp_path):
    """A token file makes listening on every address acceptable."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config = load_config(["--listen", "0.0.0.0:1", "--token-file", str(token)], environ={})
    assert config.token == "s3cret"


def test_token_from_environment():
    """VDSMLIKE_TOKEN supplies the token when the config has none."""
    assert load_config([], environ={"VDSMLIKE_TOKEN": "abc"}).token == "abc"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:5", ("localhost", 5)),
    ],
)
def test_parse_listen(text, expected):
    """HOST:PORT and [v6]:PORT are split into host and port."""
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":80", "h:port", "h:70000"])
def test_parse_listen_refuses_garbage(text):
    """Anything but HOST:PORT with a valid port is refused."""
    with pytest.raises(ConfigError):
        parse_listen(text)


def test_hook_settings_are_read_and_checked():
    """[hooks] settings are read; an unknown order is refused."""
    config = read_ini("[hooks]\ntimeout = 2.5\nplugins = a, b\norder = scripts-first\n")
    assert (config.hook_timeout, config.hook_plugins, config.hook_order) == (
        2.5,
        "a, b",
        "scripts-first",
    )
    with pytest.raises(ConfigError, match="order must be"):
        from vdsmlike.config import finish

        finish(read_ini("[hooks]\norder = random\n"))
