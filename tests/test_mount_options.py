"""Mount option parsing and mount.fuseraid's argv (mount(8)'s calling convention)."""

from __future__ import annotations

import pytest

from fuseraid.cli.mount import helper_main, split_spec
from fuseraid.front.options import MountOptionError, parse_options


def test_defaults():
    o = parse_options(None)
    assert not o.readonly and not o.allow_other and not o.page_cache
    fo = o.fuse_options("fuseraid")
    assert {"default_permissions", "subtype=fuseraid", "fsname=fuseraid"} <= fo
    assert "ro" not in fo and "allow_other" not in fo


def test_known_options():
    o = parse_options(["ro,allow_other", "fsname=my,log=/tmp/l", "page_cache"])
    assert o.readonly and o.allow_other and o.page_cache
    assert o.fsname == "my" and o.log == "/tmp/l"
    assert {"ro", "allow_other", "fsname=my"} <= o.fuse_options("x")
    assert not parse_options(["ro,rw"]).readonly


def test_generic_fstab_options_ignored():
    o = parse_options(["defaults,noauto,nofail,_netdev,nosuid,nodev,x-systemd.automount,rw"])
    assert not o.readonly


@pytest.mark.parametrize("bad", ["bogus", "ro=1", "fsname=", "log=", "allow_other=yes"])
def test_bad_options(bad):
    with pytest.raises(MountOptionError) as e:
        parse_options([bad])
    assert "\n" not in str(e.value)


def test_split_spec(tmp_path):
    assert split_spec("/a:/b:/c") == ["/a", "/b", "/c"]
    weird = tmp_path / "a:b"
    weird.write_bytes(b"")
    assert split_spec(str(weird)) == [str(weird)]
    assert split_spec("/only") == ["/only"]


def test_helper_usage_errors(capsys, tmp_path):
    assert helper_main(["onlyspec"]) == 1
    assert "usage" in capsys.readouterr().err
    assert helper_main(["a:b", str(tmp_path), "-o"]) == 1
    assert "-o needs a value" in capsys.readouterr().err
    assert helper_main(["a:b", str(tmp_path), "-N", "x"]) == 1
    assert "not supported" in capsys.readouterr().err
    assert helper_main(["a:b", str(tmp_path), "-o", "frobnicate"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown mount option 'frobnicate'" in err


def test_helper_fake_and_sloppy(tmp_path, capsys):
    """-f (fake) checks and mounts nothing; -s drops unknown options."""
    m = [tmp_path / "m0", tmp_path / "m1"]
    for p in m:
        p.write_bytes(b"\0" * 4096)
    mp = tmp_path / "mp"
    mp.mkdir()
    spec = ":".join(map(str, m))
    assert helper_main([spec, str(mp), "-f", "-o", "rw"]) == 0
    assert helper_main([spec, str(mp), "-sf", "-o", "frobnicate,rw"]) == 0
    assert helper_main([spec, str(mp), "-f", "-o", "frobnicate"]) == 1
    assert helper_main([f"{m[0]}:{m[0]}", str(mp), "-f"]) == 1
    assert "given twice" in capsys.readouterr().err


def test_backup_file_option():
    assert parse_options(["backup_file=/var/tmp/r.bak,ro"]).backup_file == "/var/tmp/r.bak"
    assert parse_options(["ro"]).backup_file is None
    with pytest.raises(MountOptionError, match="backup_file needs a value"):
        parse_options(["backup_file="])
