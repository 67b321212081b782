"""A saliweb-like web service in a few lines: PDB files in, their HETATM records out.

    python examples/hetatm_service.py [FILE.pdb ...]

runs one job of it on moi's embedded defaults (a sample structure if no file is given)
and prints what it produced. A web application registers ``Hetatm`` (``[moi] services =
examples.hetatm_service:Hetatm``) and its users submit it from the page, the API or
``moi run hetatm --input FILE.pdb``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

from moi.services import Parameter, Service, validators

SAMPLE = """\
HEADER    SAMPLE STRUCTURE
ATOM      1  N   MET A   1      38.198  19.582  28.560  1.00 54.57           N
ATOM      2  CA  MET A   1      38.426  20.955  28.968  1.00 54.10           C
HETATM  900  O   HOH A 201      40.102  22.315  30.001  1.00 30.00           O
HETATM  901 ZN    ZN A 202      35.001  18.312  27.115  1.00 20.00          ZN
END
"""


class Hetatm(Service):
    """Extract the HETATM records (ligands, ions, water) of the submitted structures."""

    name = "hetatm"
    parameters = [Parameter("residue", "str", default="", help="keep only this residue (HOH, ZN); empty: all")]
    validators = [validators.non_empty, validators.pdb]
    archive_after = "30d"
    expire_after = "90d"

    def preprocess(self) -> None:
        structures = sorted(Path("input").glob("*"))
        self.logger.info("%d structure(s) to read", len(structures))
        if not structures:
            self.skip_run()  # nothing to do: straight to Success

    def run(self) -> str:
        # A command line, run by the shell in the job directory.
        return "grep -h '^HETATM' input/* > output/hetatm.pdb || test $? -eq 1"

    def postprocess(self) -> None:
        records = Path("output/hetatm.pdb").read_text().splitlines()
        wanted = self.params["residue"]
        kept = [line for line in records if not wanted or line[17:20].strip() == wanted]
        Path("output/hetatm.pdb").write_text("".join(line + "\n" for line in kept))
        residues: dict[str, int] = {}
        for line in kept:
            residues[line[17:20].strip()] = residues.get(line[17:20].strip(), 0) + 1
        Path("output/summary.json").write_text(json.dumps(residues, sort_keys=True))
        self.logger.info("kept %d HETATM record(s)", len(kept))

    def archive(self) -> None:
        for path in Path(self.directory, "output").glob("*.pdb"):  # kept, smaller, on slower storage
            with open(path, "rb") as source, gzip.open(f"{path}.gz", "wb") as target:
                shutil.copyfileobj(source, target)
            path.unlink()

    def expire(self) -> None:
        shutil.rmtree(os.path.join(self.directory, "tmp"), ignore_errors=True)  # moi removes the rest


def main(paths: list[str]) -> int:
    from moi import files, job, services

    services.register(Hetatm)
    inputs = {os.path.basename(p): p for p in paths} or {"sample.pdb": SAMPLE.encode()}
    job_id, _, handle = services.submit("hetatm", "demo", {}, files=inputs)
    print(f"Submitted job id: {job_id}")
    handle.wait(timeout=120)
    info = job.get_info(job_id)
    print(f"{info['status']}: {info['result']}")
    for entry in files.list(job_id, "output"):
        print(f"  {entry.path} ({entry.size} bytes)")
    with files.open(job_id, "output/summary.json") as summary:
        print(f"  residues: {summary.read().decode()}")
    return 0 if info["status"] == "Success" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
