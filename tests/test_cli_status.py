"""`fuseraid status` rendering of the daemon's status object (the live path is covered
in test_cli_manage.py / test_mount_cli.py)."""

from __future__ import annotations

from fuseraid.cli.status import human_size, is_degraded, render


def base(**kw) -> dict:
    st = {
        "mountpoint": "/mnt/r", "level": 6, "layout": "left-symmetric", "chunk": 65536,
        "size": 3 << 30, "raid_disks": 4, "state": "clean", "name": "h:n", "uuid": "ab",
        "task": None,
        "members": [{"role": r, "path": f"/d{r}", "state": "active"} for r in range(4)],
    }  # fmt: skip
    st.update(kw)
    return st


def test_clean_array():
    out = render(base())
    lines = out.splitlines()
    assert lines[0] == "/mnt/r: raid6, clean [4/4] [UUUU]"
    assert "         chunk : 64K" in lines
    assert "          size : 3.00 GiB (3221225472 bytes)" in lines
    assert "task" not in out
    assert [ln.split() for ln in lines[-4:]] == [[str(r), "active", f"/d{r}"] for r in range(4)]


def test_degraded_with_task_and_missing():
    members = [
        {"role": 0, "path": "/d0", "state": "active"},
        {"role": 1, "path": None, "state": "missing"},
        {"role": 2, "path": "/d2", "state": "rebuilding"},
        {"role": 3, "path": "/d3", "state": "active"},
        {"role": None, "path": "/s", "state": "spare"},
    ]
    task = {"name": "recovery of role 2", "percent": 50.0, "speed": 2 << 20, "eta": 3725}
    st = base(state="degraded", members=members, task=task, readonly=True)
    assert is_degraded(st)
    out = render(st)
    assert out.splitlines()[0] == "/mnt/r: raid6, degraded, read-only [4/2] [U__U]"
    assert ("          task : recovery of role 2 [=========>..........] 50.0%  "
            "speed 2.00 MiB/s  ETA 1:02:05") in out
    assert "     1  missing      missing" in out
    assert "     -  spare        /s" in out


def test_degraded_computed_when_absent():
    st = base()
    st["members"][1]["state"] = "faulty"
    assert is_degraded(st)
    assert render(st).splitlines()[0] == "/mnt/r: raid6, clean, degraded [4/3] [U_UU]"
    assert not is_degraded(base())


def test_unknown_eta_and_raid1_without_chunk():
    task = {"name": "resync", "percent": 0, "speed": 0, "eta": None}
    out = render(base(level=1, chunk=0, layout=None, task=task))
    assert "chunk" not in out and "layout" not in out
    assert "[....................] 0.0%  speed 0 B/s  ETA ?" in out


def test_human_size():
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.50 KiB"
    assert human_size(5 << 40) == "5.00 TiB"
