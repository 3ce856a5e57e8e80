"""mmseg's ISPRS converters on synthetic official tiles -> a fixture of their crops (names and pixel hashes).

``potsdam-tiles`` / ``vaihingen-tiles`` (changekit/data/isprs.py) claim the crops of mmseg's converters
(``tools/dataset_converters/{potsdam,vaihingen}.py`` of open-mmlab/mmsegmentation v1.2.2) without running them.
This script checks that claim against the converters themselves:

1. (project ``.venv``) write the synthetic tiles of ``tests/helpers/isprs_toy.py`` and pack them as the downloads are packed
   (``2_Ortho_RGB.zip``, ``5_Labels_all_noBoundary.zip``; ``ISPRS_semantic_labeling_Vaihingen.zip`` with ``top/``,
   ``ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip``);
2. (reference environment, ``$REF_PY``: mmcv-lite 2.1.0, mmengine 0.10.1, see ``../shared/bench/README.md``) run the
   two converter files, exported unchanged to ``$CONVERTERS`` (``potsdam.py``, ``vaihingen.py``);
3. record every PNG they wrote: ``{site: {split: {name: [sha1(image RGB uint8), sha1(label uint8)]}}}``.

    REF_PY=/path/refenv/bin/python CONVERTERS=/path/tools/dataset_converters \\
        .venv/bin/python benchmarks/reference/isprs_converter_check.py tests/fixtures/isprs/converter_crops.json

``tests/data/test_isprs.py`` regenerates the tiles and compares the presets' crops with the fixture.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from helpers.isprs_toy import write_official_tiles  # noqa: E402

ZIPS = {
    "potsdam": {"2_Ortho_RGB.zip": "2_Ortho_RGB", "5_Labels_all_noBoundary.zip": "5_Labels_all_noBoundary"},
    "vaihingen": {"ISPRS_semantic_labeling_Vaihingen.zip": "top",
                  "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip": "eroded"},
}


def sha1(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()


def pack(tiles: Path, downloads: Path, site: str) -> None:
    """The zips as distributed: Potsdam's hold a folder of tifs; Vaihingen's images sit under ``top/`` and its
    eroded labels at the archive root (what the converters' globbing expects)."""
    downloads.mkdir(parents=True)
    for name, folder in ZIPS[site].items():
        with zipfile.ZipFile(downloads / name, "w") as z:
            for f in sorted((tiles / folder).glob("*.tif")):
                arc = f"{folder}/{f.name}" if site == "potsdam" or folder == "top" else f.name
                z.write(f, arc)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/isprs/converter_crops.json")
    ref_py, conv = os.environ["REF_PY"], Path(os.environ["CONVERTERS"])
    record: dict = {"converters": "open-mmlab/mmsegmentation v1.2.2 tools/dataset_converters/{potsdam,vaihingen}.py",
                    "tiles": "tests/helpers/isprs_toy.py write_official_tiles"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for site in ("potsdam", "vaihingen"):
            write_official_tiles(tmp / site / "tiles", site)
            pack(tmp / site / "tiles", tmp / site / "downloads", site)
            subprocess.run([ref_py, str(conv / f"{site}.py"), str(tmp / site / "downloads"), "-o",
                            str(tmp / site / "converted"), "--tmp_dir", str(tmp)], check=True)
            crops: dict = {}
            for split in ("train", "val"):
                crops[split] = {}
                for img in sorted((tmp / site / "converted" / "img_dir" / split).glob("*.png")):
                    lab = tmp / site / "converted" / "ann_dir" / split / img.name
                    crops[split][img.stem] = [sha1(np.array(Image.open(img).convert("RGB"))),
                                              sha1(np.array(Image.open(lab)))]
            record[site] = crops
            print(site, {k: len(v) for k, v in crops.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
