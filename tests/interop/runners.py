"""Batch runners: one guest boot serves a whole group of cases (booting is the fixed
cost). Each runner builds its group on first demand, so deselected tests never boot."""

from __future__ import annotations

from pathlib import Path

import mdcases as mc
import mdvm
import pytest
from fuseraid_side import create_and_fill
from pattern import secpat

Result = tuple[list[Path], mc.Report, str]


def write_payload(path: Path, length: int) -> Path:
    """The pattern's first `length` bytes in a raw file, for the guest to dd from."""
    step = 8 << 20
    with open(path, "wb") as f:
        for off in range(0, length, step):
            f.write(secpat(mc.SEED, min(step, length - off), off))
    return path


class MdBatches:
    """Linux md creates and fills the cases' arrays.
    get(case) -> (member paths of the present roles in role order, md's report, output)."""

    def __init__(self, image: mdvm.Image, cases: list[mc.Case], root: Path) -> None:
        self.image, self.root = image, root
        self.batch_of = {c.name: b for b in mc.batches(cases) for c in b}
        self.done: dict[str, Result] = {}

    def get(self, case: mc.Case) -> Result:
        if case.name not in self.done:
            self._run(self.batch_of[case.name])
        return self.done[case.name]

    def _run(self, batch: list[mc.Case]) -> None:
        d = self.root / f"md-{batch[0].name}"
        d.mkdir(parents=True, exist_ok=True)
        payload = write_payload(d / "payload.img", max(sum(c.sizes) for c in batch))
        members = {c.name: mc.make_members(c, d / c.name) for c in batch}
        disks = [payload] + [p for c in batch for p in members[c.name]]
        try:
            res = mdvm.run_md_job(
                disks, mc.create_and_fill_script(batch, "/dev/vda", 1), timeout=1800,
                image=self.image, readonly=[True] + [False] * (len(disks) - 1),
            )
        except mdvm.MdVmError as e:  # every case of the batch fails with it; no reboot
            res = mdvm.JobResult(-1, f"harness error: {e}", "")
        finally:
            payload.unlink()
        reports = mc.parse_reports(res.output)
        for c in batch:
            self.done[c.name] = (members[c.name], reports.get(c.name, mc.Report()), res.output)


FrResult = tuple[int | None, str, mc.Report, str]


class FuseraidBatches:
    """fuseraid creates and fills the cases' arrays (all roles), then one boot has md
    assemble them from the present roles only.
    get(case) -> (fuseraid's array size or None, fuseraid's error, md's report, output)."""

    def __init__(self, image: mdvm.Image, cases: list[mc.Case], root: Path) -> None:
        self.image, self.root = image, root
        self.batch_of = {c.name: b for b in mc.batches(cases) for c in b}
        self.done: dict[str, FrResult] = {}

    def get(self, case: mc.Case) -> FrResult:
        if case.name not in self.done:
            self._run(self.batch_of[case.name])
        return self.done[case.name]

    def _run(self, batch: list[mc.Case]) -> None:
        made: dict[str, tuple[int | None, str, list[Path]]] = {}
        for c in batch:
            full = mc.Case(c.name, c.level, c.disks, c.layout, c.chunk_kib, c.member_mib)
            paths = mc.make_members(full, self.root / c.name)
            try:
                size, err = create_and_fill(c, paths), ""
            except pytest.skip.Exception:
                raise
            except Exception as e:  # this case's test reports it; the batch goes on
                size, err = None, f"{type(e).__name__}: {e}"
            made[c.name] = (size, err, [p for r, p in enumerate(paths) if r not in c.missing])
        ok = [c for c in batch if made[c.name][0] is not None]
        output, reports = "", {}
        if ok:
            disks = [p for c in ok for p in made[c.name][2]]
            try:
                res = mdvm.run_md_job(disks, mc.assemble_script(ok), timeout=1800,
                                      image=self.image)
                output, reports = res.output, mc.parse_reports(res.output)
            except mdvm.MdVmError as e:  # every case of the batch fails with it; no reboot
                output = f"harness error: {e}"
        for c in batch:
            size, err, _ = made[c.name]
            self.done[c.name] = (size, err, reports.get(c.name, mc.Report()), output)
