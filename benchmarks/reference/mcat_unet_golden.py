"""Golden outputs of the released MCAT-UNet (wujiang0156/MCAT-UNet) — run in the reference environment, never in .venv.

1. Reference environment: ``../shared/bench/README.md`` (torch 2.14.1, mmcv-lite 2.1.0, mmengine 0.10.1, mmseg 1.2.2).
2. Export wujiang0156/MCAT-UNet (d1c5026) to ``$MCAT``. Its two model files are loaded as they are, except that their
   package-relative imports (they were written to sit inside mmseg) are made absolute and the backbone registers
   as ``MCAT_MSCAN`` (mmseg 1.2.2 already registers its own, identical, ``MSCAN``).
3. ``MCAT=$MCAT REF_WORK=../shared/bench $REF/bin/python benchmarks/reference/mcat_unet_golden.py tests/fixtures/mcat_unet``

Built: ``config/segnext_csheadunet-s_1xb4-adamw-100k_potsdam-512x512.py`` with SyncBN -> BN, no pretrained file, eval
mode, float32, CPU; weights by the golden weight rule (``../shared/reference/golden/README.md``); inputs drawn with
the rule's generator and rounded to float16. Stored: the key listing, the decode head's 1/4 logits, the auxiliary
head's logits, the logits resized to the input (256² only), and the parameter counts.
"""
import json
import os
import sys
import types

import numpy as np
import torch

sys.path.insert(0, os.environ.get("REF_WORK", "../shared/bench"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
import boot  # noqa: E402,F401  (stubs mmcv.ops / mmdet)
import torch.nn.functional as F  # noqa: E402
from helpers.golden import rule_tensor  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

SEED = 2024
CONFIG = "config/segnext_csheadunet-s_1xb4-adamw-100k_potsdam-512x512.py"


def load_released(name, fixes):
    path = os.path.join(os.environ["MCAT"], name)
    src = open(path).read()
    for a, b in fixes:
        assert a in src, (name, a)
        src = src.replace(a, b)
    mod = types.ModuleType(name[:-3])
    exec(compile(src, path, "exec"), mod.__dict__)
    return mod


def main(out_dir):
    register_all_modules()
    load_released("mscanbackbone.py", [("@MODELS.register_module()", "@MODELS.register_module(name='MCAT_MSCAN')")])
    load_released("cs_headUNet.py", [("from .fcn_head import FCNHead", "from mmseg.models.decode_heads.fcn_head import FCNHead"),
                                     ("from ..utils import resize", "from mmseg.models.utils import resize")])
    os.makedirs(out_dir, exist_ok=True)
    cfg = Config.fromfile(os.path.join(os.environ["MCAT"], CONFIG))
    m = cfg.model
    m.data_preprocessor = None
    m.backbone.type = "MCAT_MSCAN"
    m.backbone.init_cfg = None
    for head in (m.decode_head, m.auxiliary_head):
        head.norm_cfg = dict(type="BN", requires_grad=True)
    torch.manual_seed(0)
    model = MODELS.build(m).eval()
    sd = model.state_dict()
    keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    model.load_state_dict({k: rule_tensor(k, shape, dtype, SEED) for k, shape, dtype in keys})
    n_params = sum(p.numel() for p in model.parameters())
    for size in (256, 512):
        g = torch.Generator().manual_seed(SEED)
        x = torch.randn(1, 3, size, size, generator=g).half().float()
        with torch.no_grad():
            feats = model.backbone(x)
            logits = model.decode_head(feats)
            aux = model.auxiliary_head(feats)
        full = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        np.savez_compressed(os.path.join(out_dir, f"mcat-unet_segnext-s_{size}.npz"), config=CONFIG.split("/")[-1],
                            seed=SEED, keys=json.dumps(keys), x=x.half().numpy(), logits=logits.numpy(),
                            aux=aux.numpy(), params=n_params,
                            **({"logits_full": full.numpy()} if size == 256 else {}),  # 512: 6 MB, just a resize
                            backbone_params=sum(p.numel() for p in model.backbone.parameters()))
        print(f"{size}: logits {tuple(logits.shape)} |mean| {logits.abs().mean():.4f} params {n_params:,}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/mcat_unet")
