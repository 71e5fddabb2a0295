import configparser

import pytest

from console.vv import VvFile, vv_render


def parse(text):
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(text)
    assert parser.sections() == ["virt-viewer"]
    return dict(parser["virt-viewer"])


def test_spice_file():
    vv = parse(vv_render(VvFile(type="spice", host="127.0.0.1", port=5901, password="pw", title="web-1")))
    assert vv == {
        "type": "spice",
        "host": "127.0.0.1",
        "port": "5901",
        "password": "pw",
        "title": "web-1",
        "delete-this-file": "1",
        "fullscreen": "0",
        "secure-attention": "ctrl+alt+end",
        "toggle-fullscreen": "shift+f11",
        "release-cursor": "shift+f12",
        "enable-usbredir": "1",
    }


def test_vnc_file_has_no_spice_keys():
    vv = parse(
        vv_render(
            VvFile(
                type="vnc",
                host="h",
                port=5900,
                password="12345678",
                title="t",
                proxy="http://127.0.0.1:3128",
                fullscreen=True,
            )
        )
    )
    assert vv["type"] == "vnc" and vv["fullscreen"] == "1"
    assert "enable-usbredir" not in vv and "proxy" not in vv  # remote-viewer's VNC takes no proxy


def test_tls_and_proxy():
    ca = "-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n"
    vv = parse(
        vv_render(
            VvFile(
                type="spice",
                host="ticket",
                port=5900,
                password="pw",
                title="t",
                tls_port=5901,
                ca=ca,
                host_subject="C=US,O=Example,CN=host1",
                proxy="http://127.0.0.1:3128",
            )
        )
    )
    assert vv["tls-port"] == "5901"
    assert vv["ca"] == "-----BEGIN CERTIFICATE-----\\nMIIB\\nAAAA\\n-----END CERTIFICATE-----"
    assert vv["host-subject"] == "C=US,O=Example,CN=host1"
    assert vv["proxy"] == "http://127.0.0.1:3128"
    no_ca = parse(
        vv_render(VvFile(type="spice", host="h", port=5900, password="pw", title="t", tls_port=5901))
    )
    assert "tls-port" not in no_ca  # without the CA, virt-viewer could not verify the host


@pytest.mark.parametrize("title", ["x\nhost=evil", "x\rproxy=http://evil", "x\x00", "x\u2028y"])
def test_values_cannot_add_keys(title):
    with pytest.raises(ValueError, match="line break"):
        vv_render(VvFile(type="spice", host="h", port=5900, password="pw", title=title))


def test_backslash_and_leading_space_are_escaped():
    vv = parse(vv_render(VvFile(type="spice", host="h", port=5900, password="pw", title=" a\\b")))
    assert vv["title"] == "\\sa\\\\b"  # GLib reads it back as " a\b"
