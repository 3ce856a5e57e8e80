"""Golden outputs of the released DSQNet (QinZelin/DSQNet) — run in the reference environment, never in .venv.

How to rebuild the fixtures in ``tests/fixtures/dsqnet_*.npz`` (see docs/models_dsqnet.md, "Proof"):

1. Reference environment: ``../shared/bench/README.md`` (torch 2.14.1, mmcv-lite 2.1.0, mmengine 0.10.1,
   mmseg 1.2.2 --no-deps, mmpretrain 1.1.1 --no-deps) plus ``"timm<1"`` (the fork's Swin and ViTAE import
   ``timm.models.layers`` / ``timm.models.helpers``, gone in timm 1.x).
2. Export QinZelin/DSQNet at a6ea25e (its last commit, 2025-02-17; the last code upload is 8f19920, 2024-08-27) to
   ``$DSQ`` and make its package importable — three things the repository does not ship — and put back the May
   2024 head under its original name:
   * ``opencd/models/backbones/biformer/{__init__,biformer3}.py``: empty stubs (``backbones/__init__.py`` imports
     ``.biformer.biformer3.BiFormer``, never committed; DSQNet does not use it);
   * ``opencd/models/decode_heads/DSQNet_pool.py``: restored from d9bd764 (deleted in 6dfb904 but still imported
     by ``decode_heads/__init__.py``; DSQNet does not use it);
   * ``mmcv.ops`` and ``mmdet``: stubbed by ``../shared/bench/boot.py`` (mmcv-lite has no compiled ops);
   * ``opencd/models/decode_heads/BMQNet.py``: ``git show 9f703b7:opencd/models/decode_heads/BMQNet.py``, the May 2024
     head. It is byte-identical to ``DSQNet.py`` at c9ed32b (2024-05-12, the rename) apart from the class name, so it
     registers as ``BMQNet`` beside HEAD's ``DSQNet``.
3. ``DSQ=$DSQ REF_WORK=../shared/bench $REF/bin/python benchmarks/reference/dsqnet_golden.py tests/fixtures``

What is built: the released configs ``configs/DSQNet/DSQNet_{swin,vitae}_imp_512x512_80k_*`` with SyncBN → BN, no
pretrained file, eval mode, float32, CPU, and

* ``dsqnet_{swin-t,vitaev2-s}_512.npz``: the configs exactly as shipped (channels 128, img_size 512) with the May 2024
  head they were written for (``BMQNet`` = ``DSQNet`` at c9ed32b..c3bc4f5^) — changekit's ``dsqnet_*``;
* ``dsqnet-2408_*.npz``: the August 2024 upload (HEAD, 8f19920) — changekit's ``dsqnet-2408_*`` — with two settings
  it needs to run at all (it crashes with the configs as shipped, see docs/models_dsqnet.md):
* ``channels=64`` — the only width at which HEAD's modules fit together (CFP's query width is hard-coded 64,
  ``key_generation`` takes ``channels`` in);
* at 512² ``key_generation`` is built with the config's ``img_size=512`` (pool 8×8 → 2×2 cells); HEAD hard-codes
  256 there and so only runs on 256² inputs. The 256² golden runs HEAD exactly as written.

Weights follow the golden weight rule (``../shared/reference/golden/README.md``). Inputs are drawn with the same
rule and rounded to float16 so that they are stored exactly at half the size, once per size
(``dsqnet_inputs_{256,512}.npz``).
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.environ.get("REF_WORK", "../shared/bench"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from helpers.golden import rule_tensor  # noqa: E402  (the golden weight rule, shared with the tests; numpy/torch only)

os.environ.setdefault("OPENCD", os.environ["DSQ"])
import boot  # noqa: E402,F401  (stubs mmcv.ops / mmdet, puts $OPENCD first on sys.path)
from mmengine.config import Config  # noqa: E402
from opencd.registry import MODELS  # noqa: E402

SEED = 2024
CONFIGS = {
    "swin-t": "configs/DSQNet/DSQNet_swin_imp_512x512_80k_levircd_lr1e-4_bs8_wd0.01.py",
    "vitaev2-s": "configs/DSQNet/DSQNet_vitae_imp_512x512_80k_levirc_lr1e-4_bs8_wd0.01.py",
}


def build(backbone, size, version):
    cfg = Config.fromfile(os.path.join(os.environ["DSQ"], CONFIGS[backbone]))
    m = cfg.model
    m.pretrained = None
    m.data_preprocessor = None
    m.decode_head.norm_cfg = dict(type="BN", requires_grad=True)
    m.decode_head.pop("sampler", None)
    if version == "2405":
        import opencd.models.decode_heads.BMQNet  # noqa: F401  (registers the May 2024 head)
        m.decode_head.type = "BMQNet"
        return MODELS.build(m).eval()
    m.decode_head.channels = 64
    model = MODELS.build(m)
    if size != 256:
        from opencd.models.decode_heads.DSQNet import key_generation
        h = model.decode_head
        h.key_generation = key_generation(window_nums=h.window_nums, in_channels=h.channels, norm_cfg=h.norm_cfg,
                                          act_cfg=h.act_cfg, img_size=size)
    return model.eval()


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    runs = [("2405", "swin-t", 512), ("2405", "vitaev2-s", 512),
            ("2408", "swin-t", 512), ("2408", "vitaev2-s", 512), ("2408", "swin-t", 256)]
    for version, backbone, size in runs:
        torch.manual_seed(0)
        model = build(backbone, size, version)
        sd = model.state_dict()
        keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
        model.load_state_dict({k: rule_tensor(k, shape, dtype, SEED) for k, shape, dtype in keys})
        g = torch.Generator().manual_seed(SEED)
        t1 = torch.randn(1, 3, size, size, generator=g).half().float()
        t2 = torch.randn(1, 3, size, size, generator=g).half().float()
        with torch.no_grad():
            feats = model.extract_feat(torch.cat([t1, t2], 1))
            logits = model.decode_head(feats)
        n_params = sum(p.numel() for p in model.parameters())
        n_backbone = sum(p.numel() for p in model.backbone.parameters())
        name = f"dsqnet{'-2408' if version == '2408' else ''}_{backbone}_{size}.npz"
        np.savez_compressed(
            os.path.join(out_dir, name), config=CONFIGS[backbone].split("/")[-1], seed=SEED, inputs=f"{size}",
            keys=json.dumps(keys), logits=logits.numpy(), params=n_params, backbone_params=n_backbone)
        # both backbones see the same pair: stored once per size
        np.savez_compressed(os.path.join(out_dir, f"dsqnet_inputs_{size}.npz"), seed=SEED,
                            t1=t1.half().numpy(), t2=t2.half().numpy())
        print(f"{name}: logits {tuple(logits.shape)} |mean| {logits.abs().mean():.4f}  params {n_params:,} "
              f"(backbone {n_backbone:,})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
